// The seed report through the executor: a process task returning its inner
// thread pool's futures instead of their values fails to compile, and the
// message says to return the values.
#include <mp/future.hpp>
#include <mp/process_pool_executor.hpp>

#include <vector>

std::vector<mp::future<int>> inner_futures() { return {}; }

int main() {
    mp::process_pool_executor ex(2);
    auto f = ex.submit(inner_futures);
    (void)f;
}
