// The engine behind mp::pool and mp::process_pool_executor: worker
// processes, dispatch of tasks, the result thread and the supervisor thread.
//
// Threads of the parent:
// - callers: add jobs and dispatch their first tasks;
// - the result thread: takes results from the result queue, hands them to
//   their jobs, and refills the task queue (one task out, one task in);
// - the supervisor: watches the workers' sentinels, blames a dead worker's
//   task (read from its slot), starts replacements, and stops workers whose
//   task ran past its deadline.
// A dead worker's loss is reported through the result queue, behind every
// result that worker sent before it died, so a task that finished is never
// reported lost.
#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <thread>
#include <unordered_map>

#include "mp/pool.hpp"
#include "mp/process.hpp"
#include "mp/process_pool_executor.hpp"
#include "log.hpp"
#include "runtime.hpp"
#include "sys/sync_sys.hpp"
#include "sys/sys.hpp"
#include "worker/protocol.hpp"
#include "worker/shm_channel.hpp"

namespace mp::detail {

namespace w = worker;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

// Tasks handed to the shared task queue but without a result yet, per
// worker. Trade-off: more keeps workers fed when tasks are tiny (the parent
// refills one task per result it reads); fewer lets cancel() succeed for
// more futures and shutdown(cancel_futures) drop more (Python keeps one more
// than max_workers).
constexpr std::size_t dispatch_depth_per_worker = 16;
// A worker stopped for its task's deadline gets SIGTERM, then SIGKILL after this.
constexpr auto stop_grace = 200ms;
// How often the supervisor looks at the workers' slots while tasks with a
// deadline are in flight (a deadline is honoured to within this).
constexpr auto deadline_scan = 10ms;
// How long the supervisor waits before retrying to start a worker that failed to start.
constexpr auto restart_backoff = 100ms;

using later_list = std::vector<std::function<void()>>;

void run_all(later_list& later) noexcept {
    for (auto& f : later) {
        try {
            f();
        } catch (...) {
        }
    }
    later.clear();
}

std::exception_ptr terminated_error() {
    return std::make_exception_ptr(
        closed_error("mp: the pool was terminated before this task finished (terminate(), or the pool was "
                     "destroyed while its tasks ran); its result is lost"));
}

}  // namespace

class engine_core : public std::enable_shared_from_this<engine_core> {
public:
    explicit engine_core(engine_config cfg);
    ~engine_core();

    void start();
    void add(const std::shared_ptr<pool_job>& job, const char* what);
    void room_available(pool_job* job);
    void drop(pool_job* job);
    void close() noexcept;
    void join();
    void terminate() noexcept;
    void cancel_pending() noexcept;
    bool closed() const noexcept {
        std::lock_guard lock(mutex_);
        return state_ != run_state::open;
    }
    int workers() const noexcept { return cfg_.workers; }
    std::vector<int> worker_pids() const;

private:
    enum class run_state { open, closed, terminated };

    struct running_task {
        std::shared_ptr<pool_job> job;
        std::uint64_t seq = 0;
        std::optional<std::chrono::nanoseconds> timeout;
    };

    struct worker_rec {
        std::unique_ptr<process> proc;
        std::uint64_t stopping_task = 0;  // being stopped for this task's deadline
        std::chrono::nanoseconds stopping_timeout{};
        steady::time_point term_sent{};
        bool kill_sent = false;
        steady::time_point retry_at{};    // empty slot: when to try starting a worker again
    };

    void dispatch_locked(later_list& later);
    bool idle_locked() const { return sources_.empty() && parked_.empty() && running_.empty(); }

    void collect_loop();
    static void on_result_message(void* context, input_archive& ar);
    void deliver(std::uint64_t id, bool ok, input_archive& ar);
    void deliver_error(std::uint64_t id, std::exception_ptr e);

    void supervise_loop();
    void handle_exit(std::uint32_t slot);
    void check_deadlines();
    void stop_all_workers() noexcept;
    std::unique_ptr<process> start_worker(std::uint32_t slot);
    std::string worker_name() const;
    void wake() noexcept;
    void post_result_queue(const output_archive& ar) noexcept;
    void finish_threads() noexcept;

    const engine_config cfg_;
    start_method method_;
    std::size_t depth_;
    std::unique_ptr<queue_core> tasks_;
    std::unique_ptr<queue_core> results_;
    std::unique_ptr<w::slot_table> slots_;
    unique_fd wake_read_, wake_write_;

    mutable std::mutex mutex_;
    std::condition_variable idle_cv_;                        // notified when idle_locked() may have become true
    run_state state_ = run_state::open;                      // guarded by mutex_
    std::deque<std::shared_ptr<pool_job>> sources_;          // guarded by mutex_: jobs that may produce
    std::vector<std::shared_ptr<pool_job>> parked_;          // guarded by mutex_: jobs waiting for room
    std::unordered_map<std::uint64_t, running_task> running_;  // guarded by mutex_: dispatched, no result yet
    std::uint64_t next_id_ = 1;                              // guarded by mutex_
    std::vector<std::byte> scratch_;                         // guarded by mutex_: reused task buffer
    std::atomic<std::size_t> timed_{0};                      // tasks with a deadline in running_

    mutable std::mutex workers_mutex_;
    std::vector<worker_rec> workers_;  // guarded by workers_mutex_ for reading; written by the supervisor
                                       // (and by start()/stop before and after it runs)

    std::atomic<bool> stopping_{false};     // no more replacements: the workers are being stopped
    std::atomic<bool> terminating_{false};  // the supervisor kills every worker and ends

    std::mutex shutdown_mutex_;
    bool finished_ = false;  // guarded by shutdown_mutex_: threads joined, workers gone
    std::thread collector_;
    std::thread supervisor_;
};

// ---------------------------------------------------------------------------

engine_core::engine_core(engine_config cfg) : cfg_(std::move(cfg)) {
    if (cfg_.workers < 1)
        throw value_error("mp: a pool needs at least one worker process (asked for " + std::to_string(cfg_.workers) +
                          ")");
    method_ = cfg_.context ? cfg_.context->get_start_method() : get_start_method();
    depth_ = dispatch_depth_per_worker * static_cast<std::size_t>(cfg_.workers);
    tasks_ = std::make_unique<queue_core>(0, false);
    results_ = std::make_unique<queue_core>(0, false);
    slots_ = std::make_unique<w::slot_table>(static_cast<std::uint32_t>(cfg_.workers));
    auto [r, wr] = sys::socket_pair();
    sys::set_nonblocking(r.get(), true);
    sys::set_nonblocking(wr.get(), true);  // a full buffer already means "wake up"
    wake_read_ = std::move(r);
    wake_write_ = std::move(wr);
    workers_.resize(static_cast<std::size_t>(cfg_.workers));
}

engine_core::~engine_core() { terminate(); }

void engine_core::start() {
    // Workers first, threads after: a fork worker is then forked from a
    // process whose only thread is the caller's.
    try {
        for (std::uint32_t i = 0; i < workers_.size(); ++i) {
            auto p = start_worker(i);
            std::lock_guard lock(workers_mutex_);
            workers_[i].proc = std::move(p);
        }
    } catch (...) {
        stop_all_workers();
        {
            std::lock_guard sl(shutdown_mutex_);
            finished_ = true;
        }
        std::lock_guard lock(mutex_);
        state_ = run_state::terminated;
        throw;
    }
    collector_ = std::thread([this] { collect_loop(); });
    supervisor_ = std::thread([this] { supervise_loop(); });
}

std::string engine_core::worker_name() const {
    std::string name;
    switch (method_) {
        case start_method::fork: name = "Fork"; break;
        case start_method::spawn: name = "Spawn"; break;
        case start_method::forkserver: name = "ForkServer"; break;
    }
    name += cfg_.pool_names ? "PoolWorker-" : "Process-";
    // Python numbers a pool's workers with the same counter as every other
    // child ("ForkPoolWorker-3" is this process's third child): peek at the
    // number the child is about to get.
    auto& rt = runtime::get();
    std::lock_guard guard(rt.mutex);
    for (int id : rt.self.ids) name += std::to_string(id) + ":";
    name += std::to_string(rt.child_counter + 1);
    return name;
}

std::unique_ptr<process> engine_core::start_worker(std::uint32_t slot) {
    w::worker_setup setup;
    setup.task_fd = tasks_->fd();
    setup.result_fd = results_->fd();
    setup.slots_fd = slots_->fd();
    setup.slot = slot;
    setup.slot_count = static_cast<std::uint32_t>(cfg_.workers);
    setup.max_tasks = cfg_.max_tasks_per_child;
    setup.initializer = cfg_.initializer;
    (*slots_)[slot].task.store(0, std::memory_order_relaxed);
    auto p = std::make_unique<process>(
        process_options{.name = worker_name(), .daemon = false, .context = mp::context(method_)},
        &w::pool_worker_main, std::move(setup));
    p->start();
    return p;
}

std::vector<int> engine_core::worker_pids() const {
    std::lock_guard lock(workers_mutex_);
    std::vector<int> pids;
    for (auto& w : workers_)
        if (w.proc) pids.push_back(w.proc->pid());
    return pids;
}

void engine_core::wake() noexcept {
    char c = 1;
    (void)sys::send_raw(wake_write_.get(), &c, 1);
}

void engine_core::post_result_queue(const output_archive& ar) noexcept {
    try {
        results_->put(ar, std::nullopt);
    } catch (const std::exception& e) {
        detail::log(log_level::error, std::string("mp: pool: could not post to the result queue: ") + e.what());
    }
}

// ---- jobs and dispatch ---------------------------------------------------------

void engine_core::add(const std::shared_ptr<pool_job>& job, const char* what) {
    later_list later;
    {
        std::lock_guard lock(mutex_);
        if (state_ != run_state::open)
            throw closed_error(std::string("mp: ") + what +
                               ": the pool was closed (close(), terminate() or shutdown()); no new tasks "
                               "can be submitted to it");
        job->engine_ = weak_from_this();
        sources_.push_back(job);
        dispatch_locked(later);
    }
    run_all(later);
}

void engine_core::dispatch_locked(later_list& later) {
    const bool unbounded = state_ != run_state::open;
    while (running_.size() < depth_ && !sources_.empty()) {
        std::shared_ptr<pool_job> job = sources_.front();
        output_archive ar(std::move(scratch_));
        const std::uint64_t id = next_id_;
        w::write_task_header(ar, id);
        std::uint64_t seq = 0;
        auto step = job->produce(ar, seq, unbounded);
        switch (step) {
            case pool_job::step::task: {
                ++next_id_;
                running_.emplace(id, running_task{job, seq, job->timeout});
                // The supervisor sleeps without a time limit while no task has a deadline.
                if (job->timeout && timed_.fetch_add(1, std::memory_order_relaxed) == 0) wake();
                try {
                    tasks_->put(ar, std::nullopt);
                } catch (...) {
                    running_.erase(id);
                    if (job->timeout) timed_.fetch_sub(1, std::memory_order_relaxed);
                    later.push_back([job, seq, e = std::current_exception()] { job->on_error(seq, e); });
                }
                break;
            }
            case pool_job::step::skip: break;
            case pool_job::step::wait:
                parked_.push_back(job);
                sources_.pop_front();
                break;
            case pool_job::step::done:
                sources_.pop_front();
                later.push_back([job] { job->on_exhausted(); });
                break;
        }
        scratch_ = ar.take_buffer();
    }
    if (idle_locked()) idle_cv_.notify_all();
}

void engine_core::room_available(pool_job* job) {
    later_list later;
    {
        std::lock_guard lock(mutex_);
        auto it = std::find_if(parked_.begin(), parked_.end(), [&](auto& p) { return p.get() == job; });
        if (it == parked_.end()) return;
        sources_.push_back(std::move(*it));
        parked_.erase(it);
        dispatch_locked(later);
    }
    run_all(later);
}

void engine_core::drop(pool_job* job) {
    std::lock_guard lock(mutex_);
    std::erase_if(sources_, [&](auto& p) { return p.get() == job; });
    std::erase_if(parked_, [&](auto& p) { return p.get() == job; });
    if (idle_locked()) idle_cv_.notify_all();
}

void engine_core::close() noexcept {
    later_list later;
    {
        std::lock_guard lock(mutex_);
        if (state_ != run_state::open) return;
        state_ = run_state::closed;
        // Everything queued must now run to the end: lift the windows.
        for (auto& j : parked_) sources_.push_back(std::move(j));
        parked_.clear();
        try {
            dispatch_locked(later);
        } catch (...) {
        }
    }
    run_all(later);
}

void engine_core::cancel_pending() noexcept {
    std::vector<std::shared_ptr<pool_job>> dropped;
    {
        std::lock_guard lock(mutex_);
        dropped.assign(sources_.begin(), sources_.end());
        dropped.insert(dropped.end(), parked_.begin(), parked_.end());
        sources_.clear();
        parked_.clear();
        if (idle_locked()) idle_cv_.notify_all();
    }
    auto why = std::make_exception_ptr(
        cancelled_error("mp: cancelled by shutdown(cancel_futures=true) before a worker took it"));
    for (auto& j : dropped) j->on_abandoned(why, true);
}

void engine_core::join() {
    {
        std::unique_lock lock(mutex_);
        if (state_ == run_state::open)
            throw value_error("mp: join() on a pool that is still open: call close() (or terminate()) first");
        idle_cv_.wait(lock, [&] { return idle_locked() || state_ == run_state::terminated; });
    }
    finish_threads();
}

void engine_core::finish_threads() noexcept {
    std::lock_guard sl(shutdown_mutex_);
    if (finished_) return;
    if (!terminating_) {
        // No replacement from now on; then one stop message per worker, each
        // taken by one worker, behind every task.
        stopping_ = true;
        output_archive stop;
        stop(static_cast<std::uint8_t>(w::task_kind::stop));
        for (int i = 0; i < cfg_.workers; ++i) {
            try {
                tasks_->put(stop, std::nullopt);
            } catch (...) {
            }
        }
    }
    wake();
    if (supervisor_.joinable()) supervisor_.join();
    output_archive stop;
    stop(static_cast<std::uint8_t>(w::result_kind::stop));
    post_result_queue(stop);
    if (collector_.joinable()) collector_.join();
    finished_ = true;
}

void engine_core::terminate() noexcept {
    std::vector<std::shared_ptr<pool_job>> dropped;
    {
        std::lock_guard lock(mutex_);
        if (state_ != run_state::terminated) {
            state_ = run_state::terminated;
            dropped.assign(sources_.begin(), sources_.end());
            dropped.insert(dropped.end(), parked_.begin(), parked_.end());
            sources_.clear();
            parked_.clear();
        }
    }
    idle_cv_.notify_all();
    {
        std::lock_guard sl(shutdown_mutex_);
        if (!finished_) {
            terminating_ = true;
            stopping_ = true;
        }
    }
    finish_threads();
    // What is still in flight will never get a result.
    std::vector<running_task> lost;
    {
        std::lock_guard lock(mutex_);
        for (auto& [id, t] : running_) lost.push_back(std::move(t));
        running_.clear();
        timed_ = 0;
    }
    auto why = terminated_error();
    for (auto& t : lost) t.job->on_error(t.seq, why);
    for (auto& j : dropped) j->on_abandoned(why, false);
}

// ---- the result thread ---------------------------------------------------------

namespace {
struct collect_context {
    engine_core* self;
    bool stop = false;
};
}  // namespace

void engine_core::collect_loop() {
    for (;;) {
        collect_context ctx{this};
        try {
            results_->get(&engine_core::on_result_message, &ctx, std::nullopt);
        } catch (const std::exception& e) {
            detail::log(log_level::error, std::string("mp: pool: a result could not be read and was dropped: ") + e.what());
        }
        if (ctx.stop) return;
    }
}

void engine_core::on_result_message(void* context, input_archive& ar) {
    auto* ctx = static_cast<collect_context*>(context);
    std::uint8_t kind = 0;
    ar(kind);
    switch (static_cast<w::result_kind>(kind)) {
        case w::result_kind::done: {
            std::uint64_t id = 0;
            std::uint8_t status = 0;
            ar(id, status);
            ctx->self->deliver(id, status == static_cast<std::uint8_t>(w::result_status::ok), ar);
            return;
        }
        case w::result_kind::lost: {
            std::uint64_t id = 0;
            std::uint8_t reason = 0;
            std::string text;
            ar(id, reason, text);
            std::exception_ptr e =
                reason == static_cast<std::uint8_t>(w::lost_reason::timed_out)
                    ? std::make_exception_ptr(timeout_error(text))
                    : std::make_exception_ptr(worker_crashed(text));
            ctx->self->deliver_error(id, e);
            return;
        }
        case w::result_kind::stop: ctx->stop = true; return;
    }
    throw serialization_error("mp: pool: a message of unknown kind arrived on the result queue");
}

void engine_core::deliver(std::uint64_t id, bool ok, input_archive& ar) {
    std::shared_ptr<pool_job> job;
    std::uint64_t seq = 0;
    later_list later;
    {
        std::lock_guard lock(mutex_);
        auto it = running_.find(id);
        if (it == running_.end()) return;  // already failed (its worker was reported dead)
        job = std::move(it->second.job);
        seq = it->second.seq;
        if (it->second.timeout) timed_.fetch_sub(1, std::memory_order_relaxed);
        running_.erase(it);
        dispatch_locked(later);
    }
    run_all(later);
    if (ok) {
        try {
            job->on_value(seq, ar);
        } catch (...) {
            job->on_error(seq, std::current_exception());
        }
    } else {
        std::exception_ptr e;
        try {
            exception_record record;
            ar(record);
            e = rebuild_exception(record);
        } catch (...) {
            e = std::current_exception();
        }
        job->on_error(seq, e);
    }
}

void engine_core::deliver_error(std::uint64_t id, std::exception_ptr e) {
    std::shared_ptr<pool_job> job;
    std::uint64_t seq = 0;
    later_list later;
    {
        std::lock_guard lock(mutex_);
        auto it = running_.find(id);
        if (it == running_.end()) return;
        job = std::move(it->second.job);
        seq = it->second.seq;
        if (it->second.timeout) timed_.fetch_sub(1, std::memory_order_relaxed);
        running_.erase(it);
        dispatch_locked(later);
    }
    run_all(later);
    job->on_error(seq, std::move(e));
}

// ---- the supervisor --------------------------------------------------------------

void engine_core::supervise_loop() {
    for (;;) {
        std::vector<int> fds{wake_read_.get()};
        std::vector<std::uint32_t> slot_of;
        bool empty_slot = false, being_stopped = false;
        {
            std::lock_guard lock(workers_mutex_);
            for (std::uint32_t i = 0; i < workers_.size(); ++i) {
                if (workers_[i].proc) {
                    fds.push_back(workers_[i].proc->sentinel());
                    slot_of.push_back(i);
                    being_stopped |= workers_[i].stopping_task != 0;
                } else {
                    empty_slot = true;
                }
            }
        }
        if (terminating_) {
            stop_all_workers();
            return;
        }
        if (stopping_ && slot_of.empty()) return;
        std::optional<steady::time_point> deadline;
        if (timed_.load(std::memory_order_relaxed) > 0 || being_stopped) deadline = steady::now() + deadline_scan;
        if (empty_slot && !stopping_) {
            auto retry = steady::now() + restart_backoff;
            if (!deadline || retry < *deadline) deadline = retry;
        }
        std::vector<std::size_t> ready;
        try {
            ready = sys::wait_any_readable(fds, deadline);
        } catch (const std::exception& e) {
            detail::log(log_level::error, std::string("mp: pool supervisor: ") + e.what());
            std::this_thread::sleep_for(restart_backoff);
        }
        char buf[64];
        while (sys::recv_raw(wake_read_.get(), buf, sizeof buf) > 0) {
        }
        if (terminating_) {
            stop_all_workers();
            return;
        }
        for (auto r : ready)
            if (r > 0) handle_exit(slot_of[r - 1]);
        if (!stopping_) {
            // Slots left empty by a failed start.
            auto now = steady::now();
            for (std::uint32_t i = 0; i < workers_.size(); ++i) {
                if (workers_[i].proc || now < workers_[i].retry_at) continue;
                try {
                    auto p = start_worker(i);
                    std::lock_guard lock(workers_mutex_);
                    workers_[i].proc = std::move(p);
                } catch (const std::exception& e) {
                    detail::log(log_level::warning,
                                std::string("mp: pool: could not start a worker process (will retry): ") + e.what());
                    workers_[i].retry_at = now + restart_backoff;
                }
            }
        }
        check_deadlines();
    }
}

void engine_core::handle_exit(std::uint32_t slot) {
    auto& rec = workers_[slot];
    int code = -1;
    try {
        rec.proc->join();
        code = rec.proc->exitcode().value_or(-1);
    } catch (...) {
    }
    std::string name = rec.proc->name();
    int pid = rec.proc->pid();
    std::uint64_t task = (*slots_)[slot].task.exchange(0, std::memory_order_acq_rel);
    if (task != 0) {
        output_archive ar;
        bool timed_out = rec.stopping_task == task;
        std::string text;
        if (timed_out) {
            text = "mp: the task was still running " +
                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(rec.stopping_timeout).count()) +
                   " ms after it started, past its deadline: its worker " + name + " (pid " + std::to_string(pid) +
                   ") was stopped and replaced. Other tasks are not affected";
        } else {
            text = "mp: the worker process " + name + " (pid " + std::to_string(pid) + ") running this task died: " +
                   w::describe_exit(code) +
                   ". The pool started a replacement and other tasks are not affected; if the task itself "
                   "crashes its process (a segfault, abort(), running out of memory), fix the task";
            if (rec.stopping_task != 0) text += " (the worker was being stopped because its previous task ran past its deadline)";
        }
        ar(static_cast<std::uint8_t>(w::result_kind::lost), task,
           static_cast<std::uint8_t>(timed_out ? w::lost_reason::timed_out : w::lost_reason::crashed), text);
        // Behind every result the worker sent before it died.
        post_result_queue(ar);
    }
    std::unique_ptr<process> old;
    {
        std::lock_guard lock(workers_mutex_);
        old = std::move(rec.proc);
        rec = worker_rec{};
    }
    old.reset();
    if (stopping_ || terminating_) return;
    try {
        auto p = start_worker(slot);
        std::lock_guard lock(workers_mutex_);
        rec.proc = std::move(p);
    } catch (const std::exception& e) {
        detail::log(log_level::warning,
                    std::string("mp: pool: could not start a replacement worker process (will retry): ") + e.what());
        rec.retry_at = steady::now() + restart_backoff;
    }
}

void engine_core::check_deadlines() {
    const auto now = steady::now();
    const std::int64_t now_ns = w::steady_now_ns();
    const bool timed = timed_.load(std::memory_order_relaxed) > 0;
    for (std::uint32_t i = 0; i < workers_.size(); ++i) {
        auto& rec = workers_[i];
        if (!rec.proc) continue;
        if (rec.stopping_task != 0) {
            if (!rec.kill_sent && now - rec.term_sent >= stop_grace) {
                rec.proc->kill();
                rec.kill_sent = true;
            }
            continue;
        }
        if (!timed) continue;
        auto& slot = (*slots_)[i];
        std::uint64_t task = slot.task.load(std::memory_order_acquire);
        if (task == 0) continue;
        std::int64_t started = slot.started_ns.load(std::memory_order_relaxed);
        std::optional<std::chrono::nanoseconds> timeout;
        {
            std::lock_guard lock(mutex_);
            auto it = running_.find(task);
            if (it != running_.end()) timeout = it->second.timeout;
        }
        if (!timeout || now_ns - started <= timeout->count()) continue;
        rec.stopping_task = task;
        rec.stopping_timeout = *timeout;
        rec.term_sent = now;
        rec.proc->terminate();
    }
}

void engine_core::stop_all_workers() noexcept {
    std::vector<process*> live;
    for (auto& w : workers_)
        if (w.proc) live.push_back(w.proc.get());
    for (auto* p : live) {
        try {
            p->terminate();
        } catch (...) {
        }
    }
    auto until = steady::now() + stop_grace;
    for (auto* p : live) {
        try {
            auto left = until - steady::now();
            if (left < steady::duration::zero()) left = steady::duration::zero();
            if (!p->join(left)) {
                p->kill();
                p->join();
            }
        } catch (...) {
        }
    }
    std::lock_guard lock(workers_mutex_);
    for (auto& w : workers_) w = worker_rec{};
}

// ---- pool_job / pool_engine --------------------------------------------------

}  // namespace mp::detail

namespace mp::detail {

void throw_fd_argument(const char* where) {
    throw serialization_error(
        std::string("mp: ") + where +
        " hold an mp::queue, pipe, lock, event or shared memory, which travel as file descriptors; pool and "
        "executor tasks travel as plain bytes and cannot carry them (Python: \"Queue objects should only be "
        "shared between processes through inheritance\"). Use an mp::manager's queue or lock (its proxies "
        "travel as addresses), or start the pool with the fork method and let workers inherit the object as a "
        "global");
}

void pool_job::room_available() noexcept {
    if (auto e = engine_.lock()) {
        try {
            e->room_available(this);
        } catch (...) {
        }
    }
}

void pool_job::drop() noexcept {
    if (auto e = engine_.lock()) e->drop(this);
}

pool_engine::pool_engine(engine_config config) : core_(std::make_shared<engine_core>(std::move(config))) {
    core_->start();
}

pool_engine::~pool_engine() {
    if (core_) core_->terminate();
}

void pool_engine::add(const std::shared_ptr<pool_job>& job, const char* what) { core_->add(job, what); }
void pool_engine::close() noexcept { core_->close(); }
void pool_engine::join() { core_->join(); }
void pool_engine::terminate() noexcept { core_->terminate(); }
void pool_engine::cancel_pending() noexcept { core_->cancel_pending(); }
bool pool_engine::closed() const noexcept { return core_->closed(); }
int pool_engine::workers() const noexcept { return core_->workers(); }
std::vector<int> pool_engine::worker_pids() const { return core_->worker_pids(); }

}  // namespace mp::detail

// ---- the public faces ------------------------------------------------------------

namespace mp {

namespace {
detail::engine_config pool_config(const pool_options& o) {
    if (o.maxtasksperchild < 0)
        throw value_error("mp: pool: maxtasksperchild must be positive (or 0 for no limit)");
    return {.workers = o.processes == 0 ? cpu_count() : o.processes,
            .context = o.context,
            .initializer = o.initializer,
            .max_tasks_per_child = o.maxtasksperchild,
            .pool_names = true};
}
detail::engine_config executor_config(const process_pool_executor_options& o) {
    if (o.max_tasks_per_child < 0)
        throw value_error("mp: process_pool_executor: max_tasks_per_child must be positive (or 0 for no limit)");
    return {.workers = o.max_workers == 0 ? cpu_count() : o.max_workers,
            .context = o.context,
            .initializer = o.initializer,
            .max_tasks_per_child = o.max_tasks_per_child,
            .pool_names = false};
}
}  // namespace

namespace {
int require_workers(int n) {
    if (n < 1) throw value_error("mp: a pool needs at least one worker process (asked for " + std::to_string(n) + ")");
    return n;
}
}  // namespace

pool::pool(int processes) : pool(pool_options{.processes = require_workers(processes)}) {}
pool::pool(pool_options options) : engine_(pool_config(options)) {}

pool::~pool() {
    try {
        engine_.close();
        engine_.join();
    } catch (...) {
    }
}

process_pool_executor::process_pool_executor(int max_workers)
    : process_pool_executor(process_pool_executor_options{.max_workers = require_workers(max_workers)}) {}
process_pool_executor::process_pool_executor(process_pool_executor_options options)
    : engine_(executor_config(options)) {}

process_pool_executor::~process_pool_executor() {
    try {
        shutdown(true);
    } catch (...) {
    }
}

void process_pool_executor::shutdown(bool wait, bool cancel_futures) {
    if (cancel_futures) engine_.cancel_pending();
    engine_.close();
    if (wait) engine_.join();
}

}  // namespace mp
