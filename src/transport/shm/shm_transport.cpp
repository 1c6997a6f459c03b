// The shared-memory transport (shm_transport.hpp): its workers, its two
// queues, the result thread and the supervisor.
#include "transport/shm/shm_transport.hpp"

#include <cstdio>
#include <cstring>
#include <system_error>

#include "log.hpp"
#include "runtime.hpp"
#include "sys/sync_sys.hpp"
#include "sys/sys.hpp"
#include "worker/protocol.hpp"
#include "worker/test_hooks.hpp"

namespace mp::detail::test_hooks {
std::atomic<int> refuse_thread_start{0};
std::atomic<bool> deadline_scan_paused{false};
}  // namespace mp::detail::test_hooks

namespace mp::detail {

namespace w = worker;
using namespace std::chrono_literals;

namespace {

// Tasks handed to the shared task queue but without a result yet, per
// worker. Trade-off: more keeps workers fed when tasks are tiny (the parent
// refills one task per result it reads); the depth no longer limits
// cancellation (a task is cancellable until a worker claims it).
constexpr std::size_t dispatch_depth_per_worker = 16;
// Task bytes in flight beyond one task per worker (and one more). The task
// queue gives its pages back behind the readers past its warm window (8 MiB)
// and jumps back to its start when a put finds it empty past 4 MiB; large
// tasks dispatched 16 per worker ahead kept it from ever being empty, so
// every megabyte of them went through fresh pages: reserved and zeroed by
// the kernel, faulted into the worker, given back (word count, 1 MiB
// chunks: a fifth of the extra CPU over the same code on threads). A few
// megabytes waiting keep the workers as busy.
constexpr std::size_t task_bytes_ahead = std::size_t{2} << 20;
// A worker being stopped gets SIGTERM, then SIGKILL after this.
constexpr auto stop_grace = 200ms;
// How often the supervisor looks at the workers' slots while tasks with a
// deadline are in flight (a deadline is honoured to within this).
constexpr auto deadline_scan = 10ms;
// How long the supervisor waits before retrying to start a worker that failed to start.
constexpr auto restart_backoff = 100ms;

// A helper thread (std::system_error when the system refuses).
template <class Fn>
std::thread start_helper_thread(Fn fn) {
    int n = test_hooks::refuse_thread_start.load(std::memory_order_relaxed);
    if (n > 0 && test_hooks::refuse_thread_start.fetch_sub(1, std::memory_order_relaxed) == 1)
        throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                                "refused by a test hook");
    return std::thread(std::move(fn));
}

// Objects an inherited transport cannot destroy (a worker's handle would wait
// for a process that is not this one's child): kept reachable, never used.
void keep_inherited(std::unique_ptr<process> p) {
    static auto* kept = new std::vector<std::unique_ptr<process>>();
    kept->push_back(std::move(p));
}

}  // namespace

shm_transport::shm_transport(shm_transport_config cfg) : cfg_(std::move(cfg)), owner_pid_(sys::current_pid()) {
    if (static_cast<std::uint32_t>(cfg_.workers) > w::max_workers_per_pool)
        throw value_error("mp: a pool can have at most " + std::to_string(w::max_workers_per_pool) +
                          " worker processes (asked for " + std::to_string(cfg_.workers) + ")");
    depth_ = dispatch_depth_per_worker * static_cast<std::size_t>(cfg_.workers);
    tasks_ = std::make_unique<queue_core>(0, false);
    results_ = std::make_unique<queue_core>(0, false);
    slots_ = std::make_unique<w::slot_table>(static_cast<std::uint32_t>(cfg_.workers),
                                             static_cast<std::uint32_t>(depth_));
    for (auto i = static_cast<std::uint32_t>(depth_); i > 0; --i) free_claims_.push_back(i - 1);
    claim_recs_.resize(depth_);
    auto [r, wr] = sys::socket_pair();
    sys::set_nonblocking(r.get(), true);
    sys::set_nonblocking(wr.get(), true);  // a full buffer already means "wake up"
    wake_read_ = std::move(r);
    wake_write_ = std::move(wr);
    workers_.resize(static_cast<std::size_t>(cfg_.workers));
    for (int i = 0; i < cfg_.workers; ++i) large_.push_back(std::make_unique<large_result_area>());
    generations_.resize(static_cast<std::size_t>(cfg_.workers), 0);
}

bool shm_transport::inherited() const noexcept { return sys::current_pid() != owner_pid_; }

shm_transport::~shm_transport() {
    if (!inherited()) {
        stop_now();
        return;
    }
    // A process that inherited this transport by fork owns none of it: the
    // threads do not exist here, a mutex may have been held by one of them
    // at the fork, and the workers are not this process's children.
    if (collector_.joinable()) collector_.detach();
    if (supervisor_.joinable()) supervisor_.detach();
    for (auto& rec : workers_) keep_inherited(std::move(rec.proc));
    // The result thread may have been parked on it at the fork: kept, never used.
    static_cast<void>(gate_cv_.release());
}

void shm_transport::start(transport_events& events) {
    events_ = &events;
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
        std::lock_guard sl(shutdown_mutex_);
        finished_ = true;
        throw;
    }
    // From here on this process has threads: a worker started later under
    // the fork method is forked by the forkserver, a thread-free helper,
    // never by this process (a fork of a threaded process inherits locks
    // other threads held: malloc's, the sanitizers', the dynamic linker's).
    threads_started_ = true;
    try {
        collector_ = start_helper_thread([this] { collect_loop(); });
        collector_id_ = collector_.get_id();
        supervisor_ = start_helper_thread([this] { supervise_loop(); });
    } catch (const std::system_error& e) {
        stop_all_workers();
        if (collector_.joinable()) {
            output_archive stop;
            stop(static_cast<std::uint8_t>(w::result_kind::stop));
            post_result_queue(stop);
            collector_.join();
        }
        {
            std::lock_guard sl(shutdown_mutex_);
            finished_ = true;
        }
        throw mp::system_error(e.code().value(),
                               std::string("mp: the pool could not start its helper thread (") + e.what() +
                                   "); its workers were stopped. The process is out of threads or memory: "
                                   "lower the number of threads and processes, or raise the limits (ulimit -u)");
    }
}

std::string shm_transport::worker_name() const {
    std::string name;
    switch (cfg_.method) {
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

std::unique_ptr<process> shm_transport::start_worker(std::uint32_t slot) {
    w::worker_setup setup;
    setup.task_fd = tasks_->fd();
    setup.result_fd = results_->fd();
    setup.slots_fd = slots_->fd();
    setup.large_fd = large_[slot]->fd();
    setup.generation = ++generations_[slot];
    setup.slot = slot;
    setup.slot_count = static_cast<std::uint32_t>(cfg_.workers);
    setup.claim_count = static_cast<std::uint32_t>(depth_);
    setup.max_tasks = cfg_.max_tasks_per_child;
    setup.initializer = cfg_.initializer;
    (*slots_)[slot].task.store(0, std::memory_order_relaxed);
    // Under the fork method a worker is forked from this process only while
    // it runs no other thread (this pool's, another pool's or the program's):
    // otherwise the forkserver, a thread-free helper, forks it.
    const bool threaded = threads_started_ || sys::thread_count() > 1;
    const start_method method = cfg_.method == start_method::fork && threaded ? start_method::forkserver : cfg_.method;
    auto p = std::make_unique<process>(
        process_options{.name = worker_name(), .daemon = false, .context = mp::context(method)},
        &w::pool_worker_main, std::move(setup));
    p->start();
    return p;
}

std::vector<int> shm_transport::worker_ids() const {
    std::lock_guard lock(workers_mutex_);
    std::vector<int> pids;
    for (auto& rec : workers_)
        if (rec.proc) pids.push_back(rec.proc->pid());
    return pids;
}

void shm_transport::wake() noexcept {
    char c = 1;
    (void)sys::send_raw(wake_write_.get(), &c, 1);
}

void shm_transport::post_result_queue(const output_archive& ar) noexcept {
    try {
        results_->put(ar, std::nullopt);
    } catch (const std::exception& e) {
        detail::log(log_level::error, std::string("mp: pool: could not post to the result queue: ") + e.what());
    }
}

// ---- tasks -------------------------------------------------------------------

transport::ticket shm_transport::open_task(output_archive& out, std::uint64_t id) {
    ticket t = 0;
    {
        std::lock_guard lock(claims_mutex_);
        if (free_claims_.empty())
            throw value_error("mp: internal: more tasks opened than the transport's capacity");
        t = free_claims_.back();
        free_claims_.pop_back();
    }
    w::write_task_header(out, id, t);
    return t;
}

bool shm_transport::room_for_more(std::size_t in_flight) const noexcept {
    return in_flight <= static_cast<std::size_t>(cfg_.workers) ||
           bytes_in_flight_.load(std::memory_order_relaxed) < task_bytes_ahead;
}

void shm_transport::send_task(ticket t, std::uint64_t id, const output_archive& out,
                              std::optional<std::chrono::nanoseconds> timeout) {
    {
        std::lock_guard lock(claims_mutex_);
        claim_recs_[t] = claim_rec{timeout, false, out.size()};
    }
    bytes_in_flight_.fetch_add(out.size(), std::memory_order_relaxed);
    if (!cfg_.sender_yields) slots_->note_sender_cpu();
    slots_->claim(t).word.store(w::claim_word(id, w::claim_queued), std::memory_order_release);
    // The supervisor sleeps without a time limit while no task has a deadline.
    if (timeout && timed_.fetch_add(1, std::memory_order_relaxed) == 0) wake();
    try {
        tasks_->put(out, std::nullopt);
    } catch (...) {
        slots_->claim(t).word.store(w::claim_word(id, w::claim_withdrawn), std::memory_order_release);
        free_claim(t);
        throw;
    }
    slots_->ring(tasks_->size(), false);
}

void shm_transport::free_claim(ticket t) noexcept {
    std::lock_guard lock(claims_mutex_);
    if (claim_recs_[t].timeout) timed_.fetch_sub(1, std::memory_order_relaxed);
    bytes_in_flight_.fetch_sub(claim_recs_[t].bytes, std::memory_order_relaxed);
    claim_recs_[t] = claim_rec{};
    free_claims_.push_back(t);
}

void shm_transport::close_task(ticket t) noexcept {
    std::lock_guard lock(claims_mutex_);
    free_claims_.push_back(t);
}

bool shm_transport::retire(ticket t, std::uint64_t id, bool only_if_queued) noexcept {
    auto& word = slots_->claim(t).word;
    std::uint64_t current = word.load(std::memory_order_acquire);
    for (;;) {
        if ((current >> 16) != id || (current & 0xFFFF) == w::claim_withdrawn) return false;
        if (only_if_queued && (current & 0xFFFF) != w::claim_queued) return false;
        if (word.compare_exchange_weak(current, w::claim_word(id, w::claim_withdrawn), std::memory_order_acq_rel))
            break;
    }
    free_claim(t);
    return true;
}

bool shm_transport::withdraw(ticket t, std::uint64_t id) noexcept {
    if (t >= depth_) return false;
    return retire(t, id, true);
}

bool shm_transport::taken(ticket t, std::uint64_t id) const noexcept {
    std::uint64_t word = slots_->claim(t).word.load(std::memory_order_acquire);
    if ((word >> 16) != id) return false;
    std::uint64_t state = word & 0xFFFF;
    return state != w::claim_queued && state != w::claim_withdrawn;
}

bool shm_transport::stop_task(ticket t, std::uint64_t id, std::exception_ptr why) noexcept {
    if (t >= depth_ || !taken(t, id)) return false;
    try {
        std::lock_guard lock(claims_mutex_);
        claim_recs_[t].stop = true;
        stop_whys_[id] = std::move(why);
        stop_asked_ = true;
    } catch (...) {
        return false;
    }
    stop_requested_ = true;
    wake();
    return true;
}

// ---- the supervisor --------------------------------------------------------------

void shm_transport::supervise_loop() {
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
                    detail::log(log_level::warning, std::string("mp: pool: could not start a worker process (will retry): ") + e.what());
                    workers_[i].retry_at = now + restart_backoff;
                }
            }
        }
        check_deadlines();
    }
}

// Whether the dead worker `worker`, whose slot names `task` in `claim`, lost
// it: it had claimed it, or it died between reading the task's message and
// claiming it (then the task is withdrawn here, so that a copy of the message
// left in the queue by the death is skipped by the next worker: it never
// runs, and is reported lost once). False when another worker has it or it
// is over.
bool shm_transport::lost_by(std::uint64_t task, std::uint32_t claim, std::uint32_t worker) {
    if (claim >= depth_) return false;
    auto& word = slots_->claim(claim).word;
    for (std::uint64_t state : {w::claim_queued, w::claim_taken_by(worker)}) {
        std::uint64_t expected = w::claim_word(task, state);
        if (word.compare_exchange_strong(expected, w::claim_word(task, w::claim_withdrawn), std::memory_order_acq_rel)) {
            free_claim(claim);
            return true;
        }
    }
    return false;
}

std::exception_ptr shm_transport::take_stop_why(std::uint64_t task) {
    std::lock_guard lock(claims_mutex_);
    auto it = stop_whys_.find(task);
    if (it == stop_whys_.end()) return nullptr;
    auto why = std::move(it->second);
    stop_whys_.erase(it);
    return why;
}

void shm_transport::handle_exit(std::uint32_t slot) {
    auto& rec = workers_[slot];
    int code = -1;
    try {
        rec.proc->join();
        code = rec.proc->exitcode().value_or(-1);
    } catch (...) {
    }
    std::string name = rec.proc->name();
    int pid = rec.proc->pid();
    auto& wslot = (*slots_)[slot];
    std::uint32_t claim = wslot.claim.load(std::memory_order_acquire);
    std::uint64_t task = wslot.task.exchange(0, std::memory_order_acq_rel);
    if (task != 0 && lost_by(task, claim, slot)) {
        output_archive ar;
        bool stopped = rec.stopping_task == task && rec.stopping_by_request;
        bool timed_out = rec.stopping_task == task && !rec.stopping_by_request;
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
            if (rec.stopping_task != 0) text += " (the worker was being stopped: its previous task was)";
        }
        auto reason = stopped ? w::lost_reason::stopped : timed_out ? w::lost_reason::timed_out : w::lost_reason::crashed;
        ar(static_cast<std::uint8_t>(w::result_kind::lost), task, static_cast<std::uint8_t>(reason), text);
        // Behind every result the worker sent before it died.
        post_result_queue(ar);
    }
    // A worker that died spinning for a task leaves no spinner: the others
    // sleep, and tasks put since (which woke nobody) need one of them.
    // Nor a pending wake-up (it may have been the one woken, dead before it
    // looked at the queue).
    std::uint32_t spinner = slot + 1;
    slots_->doorbell().spinner.compare_exchange_strong(spinner, 0);
    // Nor a sleeper on call, which rings count on to look at the queue.
    std::uint32_t on_call = slot + 1;
    slots_->doorbell().on_call.compare_exchange_strong(on_call, 0);
    slots_->doorbell().wake_pending.store(0);
    slots_->ring(0, true);
    {
        // The worker may have left its large-result area full without a
        // notice: freed once the result thread has read what it sent.
        output_archive gone;
        gone(static_cast<std::uint8_t>(w::result_kind::worker_gone), slot, generations_[slot]);
        post_result_queue(gone);
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
        detail::log(log_level::warning, std::string("mp: pool: could not start a replacement worker process (will retry): ") + e.what());
        rec.retry_at = steady::now() + restart_backoff;
    }
}

void shm_transport::check_deadlines() {
    if (test_hooks::deadline_scan_paused.load(std::memory_order_relaxed)) return;
    const auto now = steady::now();
    const std::int64_t now_ns = w::steady_now_ns();
    const bool look = timed_.load(std::memory_order_relaxed) > 0 || stop_requested_.exchange(false);
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
        if (!look) continue;
        auto& slot = (*slots_)[i];
        std::uint64_t task = slot.task.load(std::memory_order_acquire);
        if (task == 0) continue;
        std::uint32_t claim = slot.claim.load(std::memory_order_acquire);
        // Counted from the claim: a slot naming a task not claimed yet (or being skipped) is not running it.
        if (claim >= depth_ ||
            slots_->claim(claim).word.load(std::memory_order_acquire) != w::claim_word(task, w::claim_taken_by(i)))
            continue;
        std::optional<std::chrono::nanoseconds> timeout;
        bool stop = false;
        {
            std::lock_guard lock(claims_mutex_);
            timeout = claim_recs_[claim].timeout;
            stop = claim_recs_[claim].stop;
        }
        std::int64_t started = slot.started_ns.load(std::memory_order_relaxed);
        bool late = timeout && now_ns - started > timeout->count();
        if (!late && !stop) continue;
        rec.stopping_task = task;
        rec.stopping_by_request = stop;
        rec.stopping_timeout = timeout.value_or(std::chrono::nanoseconds{});
        rec.term_sent = now;
        rec.proc->terminate();
    }
}

void shm_transport::stop_all_workers() noexcept {
    std::vector<process*> live;
    for (auto& rec : workers_)
        if (rec.proc) live.push_back(rec.proc.get());
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
    for (auto& rec : workers_) rec = worker_rec{};
}

// ---- stopping ------------------------------------------------------------------------

void shm_transport::finish_threads() noexcept {
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
        slots_->ring(0, true);
    }
    wake();
    if (supervisor_.joinable()) supervisor_.join();
    output_archive stop;
    stop(static_cast<std::uint8_t>(w::result_kind::stop));
    post_result_queue(stop);
    call_collector();  // parked while waiting threads received: the stop message is its to take
    if (collector_.joinable()) {
        if (on_event_thread()) {
            // Called from a done-callback: the result thread reads the stop
            // message once the callback returns, and ends on its own.
            collector_.detach();
        } else {
            collector_.join();
        }
    }
    finished_ = true;
}

void shm_transport::stop_after_tasks() noexcept {
    if (inherited()) return;
    finish_threads();
}

void shm_transport::stop_now() noexcept {
    if (inherited()) return;
    {
        std::lock_guard sl(shutdown_mutex_);
        if (!finished_) {
            terminating_ = true;
            stopping_ = true;
        }
    }
    finish_threads();
}

}  // namespace mp::detail
