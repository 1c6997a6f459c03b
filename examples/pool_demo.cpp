// Python's Pool demo: tasks are (function, arguments) pairs — functions
// travel as data — run with apply_async, imap, imap_unordered and map; then
// errors thrown in workers reaching the caller with their type, and timeouts.
#include <mp/mp.hpp>
#include <mp/pool.hpp>

#include <chrono>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

using binary_fn = mp::function<int(int, int)>;
using task = std::pair<binary_fn, std::tuple<int, int>>;

// Python's ZeroDivisionError. Registered, so that it arrives with its type.
struct zero_division_error : std::domain_error {
    using std::domain_error::domain_error;
};
static const bool registered = mp::register_exception<zero_division_error>();

//
// Functions used by test code
//

std::string calculate(binary_fn func, std::tuple<int, int> args) {
    int result = std::apply(func, args);
    std::ostringstream out;
    out << mp::current_process().name() << " says that " << func.name() << "(" << std::get<0>(args) << ", "
        << std::get<1>(args) << ") = " << result;
    return out.str();
}

std::string calculatestar(task t) { return calculate(t.first, t.second); }

void random_sleep() {
    thread_local std::mt19937 rng{std::random_device{}()};
    std::this_thread::sleep_for(std::chrono::duration<double>(0.5 * std::uniform_real_distribution<>(0, 1)(rng)));
}

int mul(int a, int b) {
    random_sleep();
    return a * b;
}

int plus(int a, int b) {
    random_sleep();
    return a + b;
}

// C++ has no exception for a float division by zero: throw Python's.
double f(int x) {
    if (x == 5) throw zero_division_error("float division by zero");
    return 1.0 / (x - 5.0);
}

template <class T>
std::string show(const std::vector<T>& v) {
    std::ostringstream out;
    out << '[';
    for (std::size_t i = 0; i < v.size(); ++i) out << (i ? ", " : "") << v[i];
    out << ']';
    return out.str();
}

//
// Test code
//

void test() {
    const int processes = 4;
    std::cout << "Creating pool with " << processes << " processes\n\n";

    mp::pool pool(processes);

    //
    // Tests
    //

    std::vector<task> tasks;
    for (int i = 0; i < 10; ++i) tasks.emplace_back(binary_fn(mp::fn<&mul>), std::tuple{i, 7});
    for (int i = 0; i < 10; ++i) tasks.emplace_back(binary_fn(mp::fn<&plus>), std::tuple{i, 8});

    std::vector<mp::async_result<std::string>> results;
    for (const auto& t : tasks) results.push_back(pool.apply_async(calculate, t.first, t.second));
    auto imap_it = pool.imap(calculatestar, tasks);
    auto imap_unordered_it = pool.imap_unordered(calculatestar, tasks);

    std::cout << "Ordered results using pool.apply_async():\n";
    for (auto& r : results) std::cout << "\t " << r.get() << '\n';
    std::cout << '\n';

    std::cout << "Ordered results using pool.imap():\n";
    for (const auto& x : imap_it) std::cout << "\t " << x << '\n';
    std::cout << '\n';

    std::cout << "Unordered results using pool.imap_unordered():\n";
    for (const auto& x : imap_unordered_it) std::cout << "\t " << x << '\n';
    std::cout << '\n';

    std::cout << "Ordered results using pool.map() --- will block till complete:\n";
    for (const auto& x : pool.map(calculatestar, tasks)) std::cout << "\t " << x << '\n';
    std::cout << '\n';

    //
    // Test error handling
    //

    std::cout << "Testing error handling:\n";

    try {
        std::cout << pool.apply(f, 5) << '\n';
        throw std::logic_error("expected ZeroDivisionError");
    } catch (const zero_division_error&) {
        std::cout << "\tGot ZeroDivisionError as expected from pool.apply()\n";
    }

    std::vector<int> ten{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    try {
        std::cout << show(pool.map(f, ten)) << '\n';
        throw std::logic_error("expected ZeroDivisionError");
    } catch (const zero_division_error&) {
        std::cout << "\tGot ZeroDivisionError as expected from pool.map()\n";
    }

    try {
        std::vector<double> all;
        for (double x : pool.imap(f, ten)) all.push_back(x);
        std::cout << show(all) << '\n';
        throw std::logic_error("expected ZeroDivisionError");
    } catch (const zero_division_error&) {
        std::cout << "\tGot ZeroDivisionError as expected from list(pool.imap())\n";
    }

    auto it = pool.imap(f, ten);
    int i = 0;
    for (; i < 10; ++i) {
        try {
            auto x = it.next();
            if (!x) break;
            if (i == 5) throw std::logic_error("expected ZeroDivisionError");
        } catch (const zero_division_error&) {
            if (i != 5) throw;
        }
    }
    if (i != 10) throw std::logic_error("the iterator stopped early");
    std::cout << "\tGot ZeroDivisionError as expected from IMapIterator.next()\n";
    std::cout << '\n';

    //
    // Testing timeouts
    //

    std::cout << "Testing ApplyResult.get() with timeout:" << std::flush;
    auto res = pool.apply_async(calculate, tasks[0].first, tasks[0].second);
    for (;;) {
        try {
            std::string x = res.get(20ms);
            std::cout << "\n\t" << x << std::flush;
            break;
        } catch (const mp::timeout_error&) {
            std::cout << '.' << std::flush;
        }
    }
    std::cout << "\n\n";

    std::cout << "Testing IMapIterator.next() with timeout:" << std::flush;
    auto it2 = pool.imap(calculatestar, tasks);
    for (;;) {
        try {
            auto x = it2.next(20ms);
            if (!x) break;
            std::cout << "\n\t" << *x << std::flush;
        } catch (const mp::timeout_error&) {
            std::cout << '.' << std::flush;
        }
    }
    std::cout << "\n\n";
}

int main(int argc, char** argv) {
    mp::init(argc, argv);
    (void)registered;
    test();
}
