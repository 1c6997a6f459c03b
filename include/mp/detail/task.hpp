// mp/detail/task.hpp — the task protocol of mp::pool and the executors, and
// the engine that runs it.
//
// A task message is (task id, code_ref of an entry, payload): the entry is a
// function template instantiated per (callable, arguments) in the user's
// program — the same executable in every worker, whatever the start method —
// which reads the callable and its arguments from the payload, runs it and
// writes the result. A result message is (task id, ok + value | exception
// record). Everything here is independent of how workers are started and how
// bytes move: src/engine holds the engine (dispatch, results) and the
// transport interface it reaches workers through, src/transport/shm the
// shared-memory transport (workers, queues, supervision), src/worker the
// worker loop.
//
// Jobs produce tasks and consume their results: call_job here (one call,
// one future); the maps' jobs read a range lazily in chunks
// (detail/chunked_job.hpp) and collect results all at once, in order or as
// they arrive (detail/map_jobs.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mp/context.hpp"
#include "mp/detail/callable.hpp"
#include "mp/detail/code_ref.hpp"
#include "mp/error.hpp"
#include "mp/function.hpp"
#include "mp/future.hpp"
#include "mp/serialize.hpp"

namespace mp::detail {

// ---------------------------------------------------------------------------
// Worker side: entries.

/// Where an entry writes its result. The worker has already written the
/// result header into `out`; the entry appends the value and calls send()
/// while everything `out` borrows (large blocks are referenced, not copied)
/// is still alive.
struct task_result_sink {
    output_archive& out;
    void (*send_fn)(void* context);
    void* context;
    void send() const { send_fn(context); }
};

/// The code a task runs in the worker. Throwing means the task failed (the
/// worker sends the exception as the result).
using task_entry = void (*)(input_archive& in, task_result_sink& sink);

/// One call f(args...): the entry of apply/apply_async/submit.
template <class F, class R, class... Args>
void call_entry(input_archive& in, task_result_sink& sink) {
    F f = load_callable<F>(in);
    std::tuple<Args...> args{load_value<Args>(in)...};
    if constexpr (std::is_void_v<R>) {
        std::apply([&](auto&... a) { std::invoke(f, std::move(a)...); }, args);
        sink.send();
    } else {
        R r = std::apply([&](auto&... a) -> R { return std::invoke(f, std::move(a)...); }, args);
        save_value(sink.out, r);
        sink.send();  // while r lives: `out` may borrow its storage
    }
}

/// A failed item of a chunk: its index in the chunk and its exception.
struct chunk_error {
    std::uint32_t index = 0;
    exception_record record;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(index, record);
    }
};

/// f over a chunk of items (Star: f(items[i]...) for tuple items, as
/// starmap). Each item succeeds or fails on its own, so an exception reaches
/// the caller at its own index and the items around it keep their values.
/// Calls f with `args` and returns its result; a function returning void
/// gives std::monostate (map of a void function: Python's list of None).
template <class R, class F, class... A>
R call_for_value(F& f, A&&... args) {
    if constexpr (std::is_same_v<R, std::monostate> &&
                  std::is_void_v<std::invoke_result_t<F&, A&&...>>) {
        std::invoke(f, std::forward<A>(args)...);
        return {};
    } else {
        return std::invoke(f, std::forward<A>(args)...);
    }
}

template <class F, class R, class Arg, bool Star>
void chunk_entry(input_archive& in, task_result_sink& sink) {
    F f = load_callable<F>(in);
    auto args = load_value<std::vector<Arg>>(in);
    std::vector<R> values(args.size());
    std::vector<chunk_error> errors;
    for (std::size_t i = 0; i < args.size(); ++i) {
        try {
            if constexpr (Star)
                values[i] = std::apply([&](auto&... a) -> R { return call_for_value<R>(f, std::move(a)...); }, args[i]);
            else
                values[i] = call_for_value<R>(f, std::move(args[i]));
        } catch (...) {
            errors.push_back({static_cast<std::uint32_t>(i), capture_exception(std::current_exception())});
        }
    }
    save_value(sink.out, values);
    save_value(sink.out, errors);
    sink.send();
}

/// Tasks travel as bytes only: an argument that travels as a file descriptor
/// (an mp::queue, pipe, lock or shared memory) cannot be sent to a pool
/// task. As Python's "Queue objects should only be shared between processes
/// through inheritance", this is an error at submit time.
[[noreturn]] void throw_fd_argument(const char* where);

// ---------------------------------------------------------------------------
// Compile-time checks of what a task may be.

template <class F, class... Args>
using task_result_t = std::remove_cvref_t<std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>&&...>>;

template <class F>
constexpr bool require_sendable_task() {
    static_assert(sendable_callable_v<std::decay_t<F>>,
                  "mp: a task runs in a worker process, so its function must be able to travel there: pass a "
                  "plain function, a captureless lambda, mp::fn<&f>, an mp::function, or a default-constructible "
                  "or serializable function object. A lambda with captures cannot: pass the captured data as "
                  "arguments instead");
    return true;
}

template <class F, class... Args>
constexpr bool check_call_task() {
    static_assert(require_sendable_task<F>());
    static_assert(std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&&...>,
                  "mp: the task's function cannot be called with these arguments");
    (require_transferable<std::decay_t<Args>>(), ...);
    if constexpr (!std::is_void_v<task_result_t<F, Args...>>) require_transferable<task_result_t<F, Args...>>();
    return true;
}

// ---------------------------------------------------------------------------
// Jobs and the engine.

class engine_core;
class transport;

/// A source of tasks and the sink of their results. The engine calls
/// produce() without holding any lock, one call at a time per job, and the
/// result callbacks from its transport's event thread, outside its lock.
class pool_job {
public:
    enum class step { task, skip, wait, done };

    pool_job() = default;
    pool_job(const pool_job&) = delete;
    pool_job& operator=(const pool_job&) = delete;
    virtual ~pool_job() = default;

    /// Writes the next task (entry code_ref, then payload) into `out` and
    /// sets `seq`; `wait` when the job's in-flight window is full (the job
    /// calls room_available() later); `done` when it has no more. `unbounded`
    /// lifts the window (the pool is closing and everything must run).
    /// Anything `out` borrows stays alive until the next produce() call.
    virtual step produce(output_archive& out, std::uint64_t& seq, bool unbounded) noexcept = 0;
    /// After produce() returned done, outside the engine's lock.
    virtual void on_exhausted() noexcept {}
    /// The task `seq` returned normally; its value is in `in`.
    virtual void on_value(std::uint64_t seq, input_archive& in) = 0;
    /// The task `seq` failed: its own exception, its worker died, its deadline passed.
    virtual void on_error(std::uint64_t seq, std::exception_ptr e) noexcept = 0;
    /// The engine will produce nothing more from this job (terminate, or
    /// shutdown with cancel_futures); `why` says so.
    virtual void on_abandoned(std::exception_ptr why, bool cancel) noexcept = 0;
    /// The task `seq` was handed to the workers; `control` withdraws it
    /// until a worker takes it. False: the job no longer wants it (its future
    /// was cancelled meanwhile), and the engine withdraws it.
    virtual bool on_sent(std::uint64_t seq, const std::shared_ptr<task_control>& control) noexcept {
        (void)seq;
        (void)control;
        return true;
    }
    /// Whether on_sent() needs a control (only jobs with a future per task do).
    virtual bool wants_control() const noexcept { return false; }
    /// The task `seq` was withdrawn before any worker took it: it never runs.
    virtual void on_withdrawn(std::uint64_t seq) noexcept {
        on_error(seq, std::make_exception_ptr(cancelled_error("mp: cancelled before a worker took it")));
    }

    /// Whether produce() may block (it reads a range whose iteration runs
    /// user code). Such a job is fed by the engine's feeder thread, never by
    /// the thread that delivers results or by a submitting caller.
    virtual bool may_block() const noexcept { return false; }

    /// Per-task deadline, counted from when a worker starts the task.
    std::optional<std::chrono::nanoseconds> timeout;

protected:
    /// The job's window has room again: the engine may call produce().
    void room_available() noexcept;
    /// The job's consumer is gone: produce nothing more, drop its results.
    void drop() noexcept;
    /// The job's consumer is about to wait for a result: it may receive
    /// results itself for a moment (transport::receive_while_waiting) until
    /// `done` is set or `deadline`, instead of being woken per result.
    void help_receive(const std::atomic<bool>& done, std::optional<std::chrono::steady_clock::time_point> deadline) noexcept;

private:
    friend class engine_core;
    std::weak_ptr<engine_core> engine_;  // set once by the engine when the job is added
    bool dropped_ = false;               // engine-only (under its lock): produce nothing more
    bool room_pending_ = false;          // engine-only (under its lock): room_available() came while it produced
};

/// How a pool or executor starts its workers.
struct engine_config {
    int workers = 1;
    std::optional<mp::context> context;
    mp::function<void()> initializer;
    int max_tasks_per_child = 0;  // 0: no limit
    bool pool_names = true;       // "ForkPoolWorker-N" (mp::pool) or "ForkProcess-N" (executor)
    /// Whether the thread that sends the tasks yields its CPU at each look
    /// while it waits for a result, so that a worker on the same CPU may
    /// spin for tasks too. Off for pools: a waiting thread that never yields
    /// keeps the result it waits for from being computed beside it, so no
    /// worker spins on its CPU. On for an MPI worker rank's local pool,
    /// where the waiting thread also receives the next tasks from rank 0.
    bool sender_yields = false;
};

/// The machinery shared by mp::pool and mp::process_pool_executor: worker
/// processes, the task and result channels, the result thread and the
/// supervisor thread. Thread-safe.
class pool_engine {
public:
    explicit pool_engine(engine_config config);
    /// An engine over another transport (src/engine/transport.hpp): the MPI
    /// executor's. Starts it; throws what its start() throws.
    pool_engine(int workers, std::unique_ptr<transport> transport);
    pool_engine(const pool_engine&) = delete;
    pool_engine& operator=(const pool_engine&) = delete;
    /// Terminates if not joined yet. Never throws.
    ~pool_engine();

    /// Queues a job. Throws mp::closed_error after close().
    void add(const std::shared_ptr<pool_job>& job, const char* what);
    /// No more jobs; those queued still run.
    void close() noexcept;
    /// Waits until every queued job has finished, then stops the workers.
    /// Requires close() (else mp::value_error).
    void join();
    /// Stops the workers now; unfinished tasks fail with mp::closed_error.
    void terminate() noexcept;
    /// Abandons every job not yet fully dispatched (executor shutdown with cancel_futures).
    void cancel_pending() noexcept;
    [[nodiscard]] bool closed() const noexcept;
    [[nodiscard]] int workers() const noexcept;
    /// Pids of the current workers (for tests and diagnostics).
    [[nodiscard]] std::vector<int> worker_pids() const;

private:
    std::shared_ptr<engine_core> core_;
};

// ---- one call ----------------------------------------------------------------

/// One call; the task is serialized when it is submitted, in the caller's
/// thread, so an argument that fails to serialize throws there.
template <class R>
class call_job final : public pool_job {
public:
    template <class F, class... Args>
    static std::shared_ptr<call_job> make(F&& f, Args&&... args) {
        using fn = std::decay_t<F>;
        auto job = std::make_shared<call_job>();
        output_archive ar;
        ar(code_ref_of(sendable<&call_entry<fn, R, std::decay_t<Args>...>>()));
        save_callable(ar, static_cast<const fn&>(f));
        (save_value(ar, args), ...);
        if (!ar.fds().empty()) throw_fd_argument("a task's arguments");
        // Flat, written once (not zero-filled first): the arguments may be
        // gone when it is sent. A transport may send it from where it lies
        // (it is borrowed by produce()'s archive until the job is released).
        job->payload_size_ = ar.size();
        job->payload_ = std::make_unique_for_overwrite<std::byte[]>(ar.size());
        if (ar.size() >= large_decode_bytes)  // a large argument: no page fault per 4 KiB in the copy
            prepare_item_buffer(job->payload_.get(), ar.size());
        ar.copy_to(job->payload_.get());
        job->future_ = job->promise_.get_future();
        return job;
    }

    [[nodiscard]] future<R> get_future() const { return future_; }

    step produce(output_archive& out, std::uint64_t& seq, bool) noexcept override {
        if (produced_) return step::done;
        produced_ = true;
        if (promise_.cancelled()) return step::skip;
        seq = 0;
        out.saveBinary(payload_.get(), payload_size_);
        return step::task;
    }
    // As Python's executor, the future is "running" only once a worker has
    // taken the task; until then cancel() withdraws it.
    bool wants_control() const noexcept override { return true; }
    bool on_sent(std::uint64_t, const std::shared_ptr<task_control>& control) noexcept override {
        return promise_.set_dispatched(control);
    }
    void on_withdrawn(std::uint64_t) noexcept override {
        promise_.set_cancelled();
        release();
    }
    void on_value(std::uint64_t, input_archive& in) override {
        if constexpr (std::is_void_v<R>)
            promise_.set_result();
        else
            promise_.set_result(load_value<R>(in));
        release();
    }
    void on_error(std::uint64_t, std::exception_ptr e) noexcept override {
        promise_.set_exception(std::move(e));
        release();
    }
    void on_abandoned(std::exception_ptr why, bool cancel) noexcept override {
        if (!(cancel && promise_.set_cancelled())) promise_.set_exception(std::move(why));
        release();
    }

private:
    void release() noexcept {
        payload_.reset();
        payload_size_ = 0;
        future_ = {};
    }

    std::unique_ptr<std::byte[]> payload_;  // entry code_ref + callable + arguments
    std::size_t payload_size_ = 0;
    promise<R> promise_;
    future<R> future_;  // kept until done, so that cancel_pending can cancel
    bool produced_ = false;  // engine-only (under its lock)
};

}  // namespace mp::detail
