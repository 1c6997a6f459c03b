// mp::bind makes a call that crosses process boundaries: a lambda with
// captures cannot travel, and the message says to bind the captured data.
#include <mp/bind.hpp>

int main() {
    int offset = 3;
    auto f = mp::bind([offset](int x) { return x + offset; }, 1);
    return f();
}
