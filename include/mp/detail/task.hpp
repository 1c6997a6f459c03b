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
// Jobs produce tasks and consume their results: call_job (one call, one
// future) and chunked_job (map/imap/starmap over a range, read lazily in
// chunks with a bounded number in flight).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
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

/// Default chunks in flight per lazy job. Trade-off: more keeps workers busy
/// when results come back unevenly and hides the parent's latency; fewer
/// keeps memory (input read ahead, results not yet consumed) smaller.
inline std::size_t default_window_chunks(int workers) { return std::max<std::size_t>(16, 4u * static_cast<std::size_t>(workers)); }

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
        job->payload_.resize(ar.size());
        ar.copy_to(job->payload_.data());  // flat: the arguments may be gone when it is sent
        job->future_ = job->promise_.get_future();
        return job;
    }

    [[nodiscard]] future<R> get_future() const { return future_; }

    step produce(output_archive& out, std::uint64_t& seq, bool) noexcept override {
        if (produced_) return step::done;
        produced_ = true;
        if (promise_.cancelled()) return step::skip;
        seq = 0;
        out.saveBinary(payload_.data(), payload_.size());
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
        std::vector<std::byte>().swap(payload_);
        future_ = {};
    }

    std::vector<std::byte> payload_;  // entry code_ref + callable + arguments
    promise<R> promise_;
    future<R> future_;  // kept until done, so that cancel_pending can cancel
    bool produced_ = false;  // engine-only (under its lock)
};

// ---- map, imap, imap_unordered, starmap ------------------------------------

enum class collect_mode { all, ordered, unordered };

/// The results side of a chunked job.
template <class R>
class chunked_job : public pool_job {
public:
    /// The results of one chunk, handed out one by one. Keeping them by
    /// chunk, not by item, makes a result cost a move, not an allocation.
    struct block {
        std::vector<R> values;
        std::vector<std::exception_ptr> errors;  // empty (all succeeded) or one per value
        std::size_t pos = 0;                     // next to hand out
    };

    chunked_job(collect_mode mode, std::size_t chunksize, std::size_t window_chunks)
        : mode_(mode), chunksize_(std::max<std::size_t>(1, chunksize)), window_chunks_(std::max<std::size_t>(1, window_chunks)) {}

    void reserve(std::size_t n) {
        if (mode_ == collect_mode::all) values_.reserve(n);
    }

    // ---- consumer side ----

    /// The next result (ordered or unordered), nullopt after the last one;
    /// rethrows an item's exception (the next call goes on after it).
    /// Throws mp::timeout_error if `deadline` passes first.
    std::optional<R> next(steady_deadline deadline) {
        std::unique_lock lock(m_);
        for (;;) {
            block* b = nullptr;
            if (mode_ == collect_mode::ordered && !ordered_.empty() && ordered_.front()) b = &*ordered_.front();
            if (mode_ == collect_mode::unordered && !unordered_.empty()) b = &unordered_.front();
            if (b) {
                std::size_t i = b->pos++;
                std::exception_ptr error = b->errors.empty() ? nullptr : std::move(b->errors[i]);
                std::optional<R> value;
                if (!error) value.emplace(std::move(b->values[i]));
                if (b->pos == b->values.size()) {
                    if (mode_ == collect_mode::ordered) {
                        ordered_.pop_front();
                        ++consumed_chunks_;
                    } else {
                        unordered_.pop_front();
                    }
                }
                return consume(lock, std::move(value), std::move(error));
            }
            if (input_done_ && consumed_ == produced_items_) {
                if (input_error_) std::rethrow_exception(std::exchange(input_error_, nullptr));
                return std::nullopt;
            }
            if (deadline) {
                if (cv_.wait_until(lock, *deadline) == std::cv_status::timeout && !ready_locked())
                    throw timeout_error("mp: no result arrived before the timeout; the tasks go on running, "
                                        "call next() again to keep waiting");
            } else {
                cv_.wait(lock);
            }
        }
    }

    /// map(): waits for every result and returns them in order, or rethrows
    /// the first failure (as soon as it happens, as Python's map does).
    std::vector<R> take_all() {
        std::unique_lock lock(m_);
        cv_.wait(lock, [&] { return failure_ || (input_done_ && chunks_in_flight_ == 0); });
        if (failure_) std::rethrow_exception(failure_);
        return std::move(values_);
    }

    /// map_async(): a future of all results.
    future<std::vector<R>> get_future() {
        std::lock_guard lock(m_);
        has_promise_ = true;
        return promise_.get_future();
    }

    /// The consumer is gone (an imap iterator destroyed before its end, or
    /// an executor map past its timeout): read no more input, and withdraw
    /// the tasks no worker has taken (Python's Executor.map cancels them).
    void abandon() noexcept {
        {
            std::lock_guard lock(m_);
            if (abandoned_) return;
            abandoned_ = true;
            input_done_ = true;
        }
        drop();
    }

    // ---- engine side ----

    step produce(output_archive& out, std::uint64_t& seq, bool unbounded) noexcept override {
        {
            std::lock_guard lock(m_);
            if (input_done_) return step::done;
            bool room = mode_ == collect_mode::all ? chunks_in_flight_ < window_chunks_
                                                    : produced_items_ - consumed_ < window_chunks_ * chunksize_;
            if (!room && !unbounded) {
                waiting_for_room_ = true;
                return step::wait;
            }
        }
        // The input is read without m_: only the engine calls produce(), one
        // call at a time, so the range needs no lock, and a consumer is not
        // held up by a slow range.
        std::exception_ptr input_error;
        std::size_t n = 0;
        try {
            n = write_chunk(out, chunksize_, input_error);
        } catch (...) {  // writing the task failed
            input_error = std::current_exception();
            n = 0;
        }
        bool finished_now = false;
        {
            std::lock_guard lock(m_);
            if (n > 0) {
                seq = next_seq_++;
                chunks_.emplace(seq, std::pair{produced_items_, n});
                produced_items_ += n;
                ++chunks_in_flight_;
            }
            if (n < chunksize_ || input_error) {
                input_done_ = true;
                input_error_ = input_error;
                if (input_error && mode_ == collect_mode::all && !failure_) failure_ = input_error;
                finished_now = true;
            }
        }
        if (finished_now) cv_.notify_all();
        if (n == 0) return step::done;
        return step::task;
    }

    void on_exhausted() noexcept override { maybe_finish(); }

    void on_value(std::uint64_t seq, input_archive& in) override {
        auto values = load_value<std::vector<R>>(in);
        auto errors = load_value<std::vector<chunk_error>>(in);
        std::unique_lock lock(m_);
        auto it = chunks_.find(seq);
        if (it == chunks_.end()) return;
        auto [first, count] = it->second;
        chunks_.erase(it);
        --chunks_in_flight_;
        if (values.size() != count) {
            lock.unlock();
            fail_chunk(seq, first, count,
                       std::make_exception_ptr(serialization_error("mp: a worker returned a chunk of the wrong size")));
            return;
        }
        std::vector<std::exception_ptr> errs(count);
        for (auto& e : errors)
            if (e.index < count) errs[e.index] = rebuild_exception(e.record);
        if (mode_ == collect_mode::all) {
            if (values_.size() < first + count) values_.resize(first + count);
            for (std::size_t i = 0; i < count; ++i) {
                if (errs[i] && !failure_) failure_ = errs[i];
                values_[first + i] = std::move(values[i]);
            }
        } else {
            block b{std::move(values), {}, 0};
            if (!errors.empty()) b.errors = std::move(errs);
            place(seq, std::move(b));
        }
        bool wake = mode_ == collect_mode::all && std::exchange(waiting_for_room_, false);
        // map() waits for the last chunk only: waking it for every chunk costs
        // it a context switch per task.
        const bool notify = mode_ != collect_mode::all || failure_ || (input_done_ && chunks_in_flight_ == 0);
        lock.unlock();
        if (notify) cv_.notify_all();
        if (wake) room_available();
        maybe_finish();
    }

    void on_error(std::uint64_t seq, std::exception_ptr e) noexcept override {
        std::unique_lock lock(m_);
        auto it = chunks_.find(seq);
        if (it == chunks_.end()) return;
        auto [first, count] = it->second;
        chunks_.erase(it);
        --chunks_in_flight_;
        lock.unlock();
        fail_chunk(seq, first, count, std::move(e));
    }

    void on_abandoned(std::exception_ptr why, bool) noexcept override {
        {
            std::lock_guard lock(m_);
            if (!input_done_) {
                input_done_ = true;
                input_error_ = why;
            }
            if (mode_ == collect_mode::all && !failure_) failure_ = why;
        }
        cv_.notify_all();
        maybe_finish();
    }

protected:
    /// Pulls up to `max_items` items from the input and writes one task for
    /// them into `out`; returns how many (0: the input is exhausted). What
    /// reading the input throws goes to `input_error`, and the items pulled
    /// before it still make a task.
    virtual std::size_t write_chunk(output_archive& out, std::size_t max_items, std::exception_ptr& input_error) = 0;

private:
    std::optional<R> consume(std::unique_lock<std::mutex>& lock, std::optional<R> value, std::exception_ptr error) {
        ++consumed_;
        bool wake = std::exchange(waiting_for_room_, false);
        lock.unlock();
        if (wake) room_available();
        if (error) std::rethrow_exception(error);
        return value;
    }

    bool ready_locked() const {
        if (mode_ == collect_mode::ordered && !ordered_.empty() && ordered_.front()) return true;
        if (mode_ == collect_mode::unordered && !unordered_.empty()) return true;
        return input_done_ && consumed_ == produced_items_;
    }

    // Under m_. Chunk numbers follow the input's order.
    void place(std::uint64_t seq, block b) {
        if (mode_ == collect_mode::unordered) {
            unordered_.push_back(std::move(b));
            return;
        }
        std::size_t at = static_cast<std::size_t>(seq - consumed_chunks_);  // earlier chunks were consumed, so had arrived
        if (ordered_.size() <= at) ordered_.resize(at + 1);
        ordered_[at].emplace(std::move(b));
    }

    void fail_chunk(std::uint64_t seq, std::size_t first, std::size_t count, std::exception_ptr e) noexcept {
        bool wake = false;
        {
            std::lock_guard lock(m_);
            wake = mode_ == collect_mode::all && std::exchange(waiting_for_room_, false);
            if (mode_ == collect_mode::all) {
                if (!failure_) failure_ = e;
            } else {
                try {
                    (void)first;
                    place(seq, block{std::vector<R>(count), std::vector<std::exception_ptr>(count, e), 0});
                } catch (...) {
                    if (!failure_) failure_ = std::current_exception();
                }
            }
        }
        cv_.notify_all();
        if (wake) room_available();
        maybe_finish();
    }

    // map_async: completes the future once everything is in, or at the first failure.
    void maybe_finish() noexcept {
        std::unique_lock lock(m_);
        if (!has_promise_ || promise_done_) return;
        if (failure_) {
            promise_done_ = true;
            auto e = failure_;
            lock.unlock();
            promise_.set_exception(e);
            return;
        }
        if (!(input_done_ && chunks_in_flight_ == 0)) return;
        promise_done_ = true;
        auto values = std::move(values_);
        lock.unlock();
        try {
            promise_.set_result(std::move(values));
        } catch (...) {
            promise_.set_exception(std::current_exception());
        }
    }

    const collect_mode mode_;
    const std::size_t chunksize_;
    const std::size_t window_chunks_;

    std::mutex m_;
    std::condition_variable cv_;
    std::uint64_t next_seq_ = 0;                                               // guarded by m_
    std::unordered_map<std::uint64_t, std::pair<std::size_t, std::size_t>> chunks_;  // in flight: seq -> (first, count); guarded by m_
    std::size_t chunks_in_flight_ = 0;   // guarded by m_
    std::size_t produced_items_ = 0;     // guarded by m_
    std::size_t consumed_ = 0;           // guarded by m_
    bool input_done_ = false;            // guarded by m_
    bool abandoned_ = false;             // guarded by m_
    bool waiting_for_room_ = false;      // guarded by m_
    std::exception_ptr input_error_;     // guarded by m_: thrown after the last item
    std::exception_ptr failure_;         // guarded by m_: all mode's first failure
    std::deque<std::optional<block>> ordered_;  // guarded by m_: chunks from consumed_chunks_ on
    std::deque<block> unordered_;        // guarded by m_
    std::uint64_t consumed_chunks_ = 0;  // guarded by m_: ordered mode
    std::vector<R> values_;              // guarded by m_: all mode
    promise<std::vector<R>> promise_;
    bool has_promise_ = false;           // guarded by m_
    bool promise_done_ = false;          // guarded by m_
};

/// A chunked job reading `View` lazily and calling F on each item (or on the
/// members of each tuple item, when Star).
template <class R, class F, class Arg, bool Star, class View>
class range_job final : public chunked_job<R> {
public:
    range_job(collect_mode mode, std::size_t chunksize, std::size_t window_chunks, F f, View view)
        : chunked_job<R>(mode, chunksize, window_chunks), f_(std::move(f)), view_(std::move(view)) {}

    // Reading a contiguous range is copying its elements; any other range
    // (a generator, a transform view) may run user code that blocks.
    bool may_block() const noexcept override { return !std::ranges::contiguous_range<View>; }

private:
    std::size_t write_chunk(output_archive& out, std::size_t max_items, std::exception_ptr& input_error) override {
        chunk_.clear();
        try {
            if (!started_) {
                it_.emplace(std::ranges::begin(view_));
                started_ = true;
            }
            auto& it = *it_;
            while (chunk_.size() < max_items && it != std::ranges::end(view_)) {
                chunk_.push_back(static_cast<Arg>(*it));
                ++it;
            }
        } catch (...) {
            input_error = std::current_exception();
        }
        if (chunk_.empty()) return 0;
        out(code_ref_of(sendable<&chunk_entry<F, R, Arg, Star>>()));
        save_callable(out, f_);
        save_value(out, chunk_);  // chunk_ lives until the next call: `out` may borrow from it
        if (!out.fds().empty()) throw_fd_argument("the items of map/imap/starmap");
        return chunk_.size();
    }

    F f_;
    View view_;
    std::optional<std::ranges::iterator_t<View>> it_;
    bool started_ = false;
    std::vector<Arg> chunk_;
};

template <class T>
using value_or_none = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class F, class Arg, bool Star>
struct map_result {
    using type = value_or_none<task_result_t<F, Arg>>;
};
template <class F, class Arg>
struct map_result<F, Arg, true> {
    template <class T>
    struct apply_result;
    template <template <class...> class Tuple, class... A>
    struct apply_result<Tuple<A...>> {
        using type = value_or_none<task_result_t<F, A...>>;
    };
    template <class A, class B>
    struct apply_result<std::pair<A, B>> {
        using type = value_or_none<task_result_t<F, A, B>>;
    };
    using type = typename apply_result<Arg>::type;
};

/// The shared part of map/imap/starmap: checks the task at compile time and
/// builds its job.
template <bool Star, class F, class Range>
auto make_range_job(F&& f, Range&& range, collect_mode mode, std::size_t chunksize, std::size_t window_chunks) {
    static_assert(std::ranges::input_range<Range>, "mp: map/imap/starmap need an input range of arguments");
    static_assert(require_sendable_task<F>());
    using fn = std::decay_t<F>;
    using arg = std::ranges::range_value_t<Range>;
    static_assert(require_transferable<arg>());
    using result = typename map_result<fn, arg, Star>::type;
    static_assert(require_transferable<result>());
    static_assert(std::is_default_constructible_v<result>,
                  "mp: map/imap/starmap collect results into a std::vector, so the result type must be "
                  "default-constructible");
    using view = std::views::all_t<Range>;
    return std::make_shared<range_job<result, fn, arg, Star, view>>(mode, chunksize, window_chunks,
                                                                    fn(std::forward<F>(f)),
                                                                    std::views::all(std::forward<Range>(range)));
}

/// Python's default chunksize for map: about four chunks per worker.
template <class Range>
std::size_t default_map_chunksize(const Range& range, int workers) {
    if constexpr (std::ranges::sized_range<const Range>) {
        auto n = static_cast<std::size_t>(std::ranges::size(range));
        auto per = static_cast<std::size_t>(workers) * 4;
        return std::max<std::size_t>(1, (n + per - 1) / per);
    } else {
        return 1;
    }
}

}  // namespace mp::detail
