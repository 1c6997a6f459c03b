// Exceptions crossing process boundaries: described by type name and what(),
// rebuilt on the other side with their type when it is known there.
#include <cxxabi.h>
#include <execinfo.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <span>
#include <vector>
#include <new>
#include <unordered_map>
#include <utility>

#include "mp/serialize.hpp"
#include "sys/after_fork.hpp"
#include "sys/process.hpp"

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

// The line backtrace_symbols prints for each return address, made once per
// address in a process. Symbolizing (dladdr) searches the symbol tables of
// the program and its libraries: where every task of a pool failed, that was
// most of a worker's time, spent on the same few addresses again and again.
// The raw addresses are cheap to take (backtrace), and a failure at a place
// that failed before now costs a lookup per frame.
class symbol_cache {
public:
    // Appends "  <line>\n" for each frame to `trace`. Known lines are
    // appended straight from the cache, under its lock: a trace that was
    // seen before costs no allocation per frame (a manager server builds one
    // for every error it replies, most of a fuzzed dispatcher's time).
    void append(std::span<void* const> frames, std::string& trace) {
        const auto generation = loaded_objects_generation();
        std::vector<std::size_t> missing;  // indices into frames
        {
            std::lock_guard guard(mutex_);
            if (generation != generation_ || lines_.size() + frames.size() > max_entries) {
                // A library was loaded or unloaded (an address may now
                // mean other code), or the cache is full: start afresh.
                lines_.clear();
                generation_ = generation;
            }
            for (std::size_t i = 0; i < frames.size(); ++i)
                if (!lines_.contains(frames[i])) missing.push_back(i);
        }
        std::vector<std::string> fresh(missing.size());  // the lines of `missing`
        if (!missing.empty()) {
            // Outside the lock: this is the slow part.
            std::vector<void*> wanted;
            for (auto i : missing) wanted.push_back(frames[i]);
            char** symbols = ::backtrace_symbols(wanted.data(), static_cast<int>(wanted.size()));
            if (!symbols) return;
            for (std::size_t k = 0; k < missing.size(); ++k) fresh[k] = symbols[k];
            std::free(symbols);
        }
        std::lock_guard guard(mutex_);
        if (generation == generation_)
            for (std::size_t k = 0; k < missing.size(); ++k) lines_.emplace(frames[missing[k]], fresh[k]);
        trace.reserve(trace.size() + frames.size() * 128);  // one allocation for a usual trace
        std::size_t k = 0;
        for (std::size_t i = 0; i < frames.size(); ++i) {
            trace += "  ";
            if (k < missing.size() && missing[k] == i) {
                trace += fresh[k++];
            } else if (auto it = lines_.find(frames[i]); it != lines_.end()) {
                trace += it->second;
            } else {
                // Forgotten meanwhile (another thread started the cache afresh).
                char raw[32];
                std::snprintf(raw, sizeof raw, "[%p]", frames[i]);
                trace += raw;
            }
            trace += '\n';
        }
    }

private:
    // Bounds the memory of a program whose failures come from ever new code
    // (it has that many distinct return addresses only if it loads code).
    static constexpr std::size_t max_entries = 4096;

    // Changes whenever the dynamic loader loads or unloads an object.
    using generation_t = std::pair<unsigned long long, unsigned long long>;  // objects loaded, unloaded
    static generation_t loaded_objects_generation() {
        generation_t generation{};
        ::dl_iterate_phdr(
            [](::dl_phdr_info* info, std::size_t size, void* out) {
                if (size >= offsetof(::dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
                    *static_cast<generation_t*>(out) = {info->dlpi_adds, info->dlpi_subs};
                return 1;  // the counters are the same in every entry: the first is enough
            },
            &generation);
        return generation;
    }

    std::mutex mutex_;
    std::unordered_map<void*, std::string> lines_;  // guarded by mutex_
    generation_t generation_{};                     // of lines_, guarded by mutex_
};

// Each process has a cache of its own: a fork child may inherit the
// parent's with its lock held by a thread the child does not have, so the
// child leaves that copy alone (never freed) and makes its own. Never
// destroyed: a thread may throw during exit.
struct process_cache {
    int pid;
    symbol_cache cache;
};
std::atomic<process_cache*> the_process_cache{nullptr};

symbol_cache& cache_of_this_process() {
    const int pid = sys::current_pid();
    auto* c = the_process_cache.load(std::memory_order_acquire);
    while (!c || c->pid != pid) {
        auto* mine = new process_cache{pid, {}};
        if (the_process_cache.compare_exchange_strong(c, mine, std::memory_order_acq_rel)) return mine->cache;
        delete mine;  // another thread of this process made one first (c is now that one)
    }
    return c->cache;
}

std::string current_trace() {
    auto& cache = cache_of_this_process();
    void* frames[32];
    int n = ::backtrace(frames, 32);
    std::string trace;
    cache.append(std::span<void* const>(frames, static_cast<std::size_t>(std::max(n, 0))), trace);
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
