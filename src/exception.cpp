// Exceptions crossing process boundaries: described by type name and what(),
// rebuilt on the other side with their type when it is known there.
#include <cxxabi.h>
#include <execinfo.h>

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>

#include "mp/serialize.hpp"
#include "sys/after_fork.hpp"

namespace mp::detail {
namespace {

using factory = std::exception_ptr (*)(const std::string&);

template <class E>
std::exception_ptr make(const std::string& what) {
    return std::make_exception_ptr(E(what));
}

struct registry {
    // Fork-guarded: a fork child rebuilding an exception must not find it
    // locked by a thread of its parent that it does not have.
    sys::fork_guarded_mutex mutex;
    std::unordered_map<std::string, factory> factories;  // guarded by mutex

    registry() {
        factories = {
            {"std::runtime_error", &make<std::runtime_error>},
            {"std::logic_error", &make<std::logic_error>},
            {"std::invalid_argument", &make<std::invalid_argument>},
            {"std::domain_error", &make<std::domain_error>},
            {"std::out_of_range", &make<std::out_of_range>},
            {"std::length_error", &make<std::length_error>},
            {"std::overflow_error", &make<std::overflow_error>},
            {"std::underflow_error", &make<std::underflow_error>},
            {"std::range_error", &make<std::range_error>},
            {"std::bad_alloc", [](const std::string&) { return std::make_exception_ptr(std::bad_alloc()); }},
            {"mp::error", &make<mp::error>},
            {"mp::bootstrap_error", &make<mp::bootstrap_error>},
            {"mp::serialization_error", &make<mp::serialization_error>},
            {"mp::timeout_error", &make<mp::timeout_error>},
            {"mp::queue_empty", &make<mp::queue_empty>},
            {"mp::queue_full", &make<mp::queue_full>},
            {"mp::eof_error", &make<mp::eof_error>},
            {"mp::closed_error", &make<mp::closed_error>},
            {"mp::process_error", &make<mp::process_error>},
            {"mp::value_error", &make<mp::value_error>},
            {"mp::broken_barrier_error", &make<mp::broken_barrier_error>},
            {"mp::worker_crashed", &make<mp::worker_crashed>},
            {"mp::cancelled_error", &make<mp::cancelled_error>},
            {"mp::authentication_error", &make<mp::authentication_error>},
            {"mp::not_exposed_error", &make<mp::not_exposed_error>},
            {"mp::lock_error", &make<mp::lock_error>},
            {"mp::mpi_error", &make<mp::mpi_error>},
        };
    }
};

registry& the_registry() {
    static registry r;
    return r;
}

// backtrace_symbols names a frame with dladdr, a scan of its module's
// symbol table: a millisecond or more per trace in a large binary, paid by a
// manager server for every request it refuses and by a worker for every task
// that throws. The same call sites throw again and again, so names are kept
// by address (bounded; modules are not unloaded while mp runs). The lock is
// only ever tried: a fork child that inherits it held goes without the
// cache rather than waiting forever.
struct frame_names {
    std::mutex mutex;
    std::unordered_map<void*, std::string> names;  // guarded by mutex
};
frame_names* const the_frame_names = new frame_names;  // never destroyed: a thread may throw during exit

std::string frame_name(void* address) {
    auto& c = *the_frame_names;
    constexpr std::size_t max_names = 4096;
    {
        std::unique_lock lock(c.mutex, std::try_to_lock);
        if (lock.owns_lock())
            if (auto it = c.names.find(address); it != c.names.end()) return it->second;
    }
    char** symbols = ::backtrace_symbols(&address, 1);
    std::string name = symbols ? symbols[0] : "?";
    std::free(symbols);
    std::unique_lock lock(c.mutex, std::try_to_lock);
    if (lock.owns_lock()) {
        if (c.names.size() >= max_names) c.names.clear();
        c.names.emplace(address, name);
    }
    return name;
}

std::string current_trace() {
    void* frames[32];
    int n = ::backtrace(frames, 32);
    std::string trace;
    for (int i = 0; i < n; ++i) {
        trace += "  ";
        trace += frame_name(frames[i]);
        trace += '\n';
    }
    return trace;
}

}  // namespace

std::string demangle(const char* mangled) {
    int status = 0;
    char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string name = (status == 0 && d) ? d : mangled;
    std::free(d);
    return name;
}

exception_record capture_exception(std::exception_ptr e) {
    exception_record record;
    try {
        std::rethrow_exception(e);
    } catch (const mp::remote_error& r) {
        // Already remote: pass it on unchanged rather than wrapping it twice.
        record.type_name = r.type_name();
        record.what = r.message();
        record.trace = r.remote_trace();
    } catch (const mp::system_error& s) {
        record.type_name = "mp::system_error";
        record.what = s.what();
        record.code = s.code().value();
    } catch (const std::exception& ex) {
        record.type_name = demangle(typeid(ex).name());
        record.what = ex.what();
    } catch (...) {
        const std::type_info* t = abi::__cxa_current_exception_type();
        record.type_name = t ? demangle(t->name()) : "unknown exception";
        record.what = "(an exception that is not a std::exception)";
    }
    if (record.trace.empty()) record.trace = current_trace();
    return record;
}

std::exception_ptr rebuild_exception(const exception_record& record) {
    if (record.type_name == "mp::system_error")
        return std::make_exception_ptr(mp::system_error(record.code, record.what));
    factory f = nullptr;
    {
        auto& r = the_registry();
        std::lock_guard guard(r.mutex);
        auto it = r.factories.find(record.type_name);
        if (it != r.factories.end()) f = it->second;
    }
    if (f) return f(record.what);
    return std::make_exception_ptr(mp::remote_error(record.type_name, record.what, record.trace));
}

std::unique_lock<sys::fork_guarded_mutex> lock_exception_registry_for_test() {
    return std::unique_lock(the_registry().mutex);
}

void register_exception_factory(std::string type_name, std::exception_ptr (*make)(const std::string&)) {
    auto& r = the_registry();
    std::lock_guard guard(r.mutex);
    r.factories[std::move(type_name)] = make;
}

}  // namespace mp::detail
