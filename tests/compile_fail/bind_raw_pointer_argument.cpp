// A bound argument must be able to cross a process boundary: a raw pointer
// cannot, and the message names it.
#include <mp/bind.hpp>

int deref(const int* p) { return *p; }

int main() {
    int x = 1;
    auto f = mp::bind(deref, &x);
    return f();
}
