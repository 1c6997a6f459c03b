// custom_manager.cpp — the custom manager example of Python's guidelines (its
// BaseManager with Foo registered twice, the baz generator and the operator
// module), printing what the Python original prints.
//
// Differences from Python, each forced by C++:
// - op._exposed_ lists the functions registered here (add, pow), not every
//   public name of Python's operator module.
// - C++ has no big integers: pow(2, 94) returns the exact decimal digits as a
//   std::string, computed by the small schoolbook routine below, so the line
//   prints 19807040628566084398385987584 exactly as Python does.
#include <algorithm>
#include <stdexcept>
#include <iostream>
#include <string>
#include <vector>

#include "mp/manager.hpp"

struct Foo {
    // Run in the manager's server process; its stdout is this terminal too.
    void f() { std::cout << "you called Foo.f()" << std::endl; }
    void g() { std::cout << "you called Foo.g()" << std::endl; }
    void _h() { std::cout << "you called Foo._h()" << std::endl; }
};

// A simple generator function: here, a function returning a range.
std::vector<int> baz() {
    std::vector<int> squares;
    for (int i = 0; i < 10; ++i) squares.push_back(i * i);
    return squares;
}

// The functions of the "operator" module this example uses.
namespace operator_module {

long add(long a, long b) { return a + b; }

/// base**exp in decimal digits, exactly (schoolbook multiplication on a
/// little-endian vector of digits).
std::string pow(long base, long exp) {
    if (exp < 0) return "unsupported: negative exponent";
    bool negative = base < 0 && exp % 2 == 1;
    unsigned long b = static_cast<unsigned long>(base < 0 ? -base : base);
    std::vector<int> digits{1};
    for (long i = 0; i < exp; ++i) {
        unsigned long carry = 0;
        for (int& d : digits) {
            unsigned long x = static_cast<unsigned long>(d) * b + carry;
            d = static_cast<int>(x % 10);
            carry = x / 10;
        }
        for (; carry; carry /= 10) digits.push_back(static_cast<int>(carry % 10));
    }
    while (digits.size() > 1 && digits.back() == 0) digits.pop_back();
    std::string s = negative ? "-" : "";
    for (auto it = digits.rbegin(); it != digits.rend(); ++it) s += static_cast<char>('0' + *it);
    return s;
}

}  // namespace operator_module

/// Python's assert, kept in release builds.
void check(bool ok, const char* what) {
    if (!ok) throw std::logic_error(std::string("assertion failed: ") + what);
}

std::vector<std::string> sorted(std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
}

void test() {
    mp::base_manager manager;
    // register the Foo class; make `f()` and `g()` accessible via proxy
    manager.register_type<Foo>("Foo1", mp::methods<&Foo::f, &Foo::g, &Foo::_h>);
    // register the Foo class; make `g()` and `_h()` accessible via proxy
    manager.register_type<Foo>("Foo2", mp::methods<&Foo::f, &Foo::g, &Foo::_h>, mp::exposed{"g", "_h"});
    // register the generator function baz
    manager.register_generator("baz", &baz);
    // register the operator functions; make them accessible via proxy
    manager.register_functions("operator", mp::functions<&operator_module::add, &operator_module::pow>);
    manager.start();

    std::cout << std::string(20, '-') << std::endl;

    mp::proxy<Foo> f1 = manager.make<Foo>("Foo1");
    f1.call<&Foo::f>();
    f1.call<&Foo::g>();
    bool refused = false;
    try {
        f1.call<&Foo::_h>();  // Python: assert not hasattr(f1, '_h')
    } catch (const mp::not_exposed_error&) {
        refused = true;
    }
    check(refused, "not hasattr(f1, '_h')");
    check(sorted(f1.exposed()) == sorted({"f", "g"}), "sorted(f1._exposed_) == sorted(['f', 'g'])");

    std::cout << std::string(20, '-') << std::endl;

    mp::proxy<Foo> f2 = manager.make<Foo>("Foo2");
    f2.call<&Foo::g>();
    f2.call<&Foo::_h>();
    refused = false;
    try {
        f2.call("f");  // Python: assert not hasattr(f2, 'f')
    } catch (const mp::not_exposed_error&) {
        refused = true;
    }
    check(refused, "not hasattr(f2, 'f')");
    check(sorted(f2.exposed()) == sorted({"g", "_h"}), "sorted(f2._exposed_) == sorted(['g', '_h'])");

    std::cout << std::string(20, '-') << std::endl;

    for (int i : manager.make_generator<int>("baz")) std::cout << '<' << i << "> ";
    std::cout << std::endl;

    std::cout << std::string(20, '-') << std::endl;

    auto op = manager.make_module("operator");
    std::cout << "op.add(23, 45) = " << op.call<long>("add", 23L, 45L) << std::endl;
    std::cout << "op.pow(2, 94) = " << op.call<std::string>("pow", 2L, 94L) << std::endl;
    std::cout << "op._exposed_ = (";
    const auto& names = op.exposed();
    for (std::size_t i = 0; i < names.size(); ++i) std::cout << (i ? ", " : "") << '\'' << names[i] << '\'';
    std::cout << ")" << std::endl;
}

int main(int argc, char** argv) {
    mp::init(argc, argv);
    test();
}
