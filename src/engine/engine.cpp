// The executor engine behind mp::pool and mp::process_pool_executor.
//
// Data flow of one task:
//
//   submit()/apply_async()/map()       the caller's thread: the call is
//     -> a job (detail/task.hpp)       serialized into a job (call_job), or a
//                                      job reads its input range lazily
//                                      (range_job)
//     -> engine (this file)            jobs produce tasks while the transport
//                                      has room; each task gets an id and a
//                                      running_ entry (job, seq, ticket)
//     -> transport (engine/transport.hpp; src/transport/shm)
//                                      hands the task to the workers; a
//                                      worker *takes* it with one claim
//     -> worker (src/worker)           runs the entry, sends the result
//     -> transport                     its event thread (or a thread that
//                                      waits in future::get, for a moment:
//                                      receive_while_waiting) reads the
//                                      result and decodes nothing under its locks
//     -> engine: on_result()           finds the job by id, refills the
//                                      transport, then outside every lock
//     -> job: decodes the value        into the future or the map's results
//     -> future                        wakes waiters, runs done-callbacks
//                                      (on the thread that received it)
//
// Locks: the engine's mutex_ guards its tables only; no user code (input
// ranges, result decoding, callbacks) runs under it or under the
// transport's. A worker lost with its task comes back as on_task_lost(),
// behind every result that worker sent, so a finished task is never failed.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "engine/engine_core.hpp"
#include "engine/transport.hpp"
#include "mp/detail/task.hpp"
#include "sys/after_fork.hpp"
#include "sys/sys.hpp"
#include "worker/protocol.hpp"

namespace mp::detail {

namespace {

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

std::atomic<int> cached_pid{0};

}  // namespace

int cached_current_pid() noexcept {
    static const bool hooked = [] {
        sys::register_after_fork([] { cached_pid.store(0, std::memory_order_relaxed); });
        return true;
    }();
    static_cast<void>(hooked);
    int pid = cached_pid.load(std::memory_order_relaxed);
    if (pid == 0) {
        pid = sys::current_pid();
        cached_pid.store(pid, std::memory_order_relaxed);
    }
    return pid;
}

namespace {

// How many tasks a result's arrival waits for room for before the engine
// refills the transport. Trade-off: larger makes fewer, bigger bursts (fewer
// wake-ups of sleeping workers per task); the workers keep the rest of the
// depth queued meanwhile, so they never starve.
constexpr std::size_t refill_batch(std::size_t depth) noexcept { return std::max<std::size_t>(1, depth / 4); }

std::exception_ptr terminated_error() {
    return std::make_exception_ptr(
        closed_error("mp: the pool was terminated before this task finished (terminate(), or the pool was "
                     "destroyed while its tasks ran); its result is lost"));
}

}  // namespace


class engine_task_control final : public task_control {
public:
    engine_task_control(std::weak_ptr<engine_core> engine, std::uint64_t id, transport::ticket ticket)
        : engine_(std::move(engine)), id_(id), ticket_(ticket) {}
    bool withdraw() noexcept override {
        auto e = engine_.lock();
        return e && e->withdraw(id_);
    }
    bool taken() const noexcept override {
        auto e = engine_.lock();
        return e && e->taken(id_, ticket_);
    }
    bool stop() noexcept override {
        auto e = engine_.lock();
        return e && e->stop_task(id_);
    }
    void help_wait(const std::atomic<bool>& done, steady_deadline deadline) noexcept override {
        // Holds the engine while the waiting thread receives for it.
        if (auto e = engine_.lock()) e->receive_while_waiting(done, deadline);
    }

private:
    std::weak_ptr<engine_core> engine_;
    std::uint64_t id_;
    transport::ticket ticket_;
};

engine_core::~engine_core() {
    if (!inherited()) {
        terminate();
        return;
    }
    // An inherited transport's destructor releases only local memory; the
    // feeder thread does not exist in this process.
    if (feeder_.joinable()) feeder_.detach();
}

// ---- jobs and dispatch ---------------------------------------------------------

void engine_core::add(const std::shared_ptr<pool_job>& job, const char* what) {
    if (inherited())
        throw closed_error(std::string("mp: ") + what + ": this pool belongs to process " +
                           std::to_string(owner_pid_) +
                           "; this process inherited it by fork and cannot use it: create a pool here");
    {
        std::lock_guard lock(mutex_);
        if (state_ != run_state::open)
            throw closed_error(std::string("mp: ") + what +
                               ": the pool was closed (close(), terminate() or shutdown()); no new tasks "
                               "can be submitted to it");
        if (job->may_block() && !feeder_.joinable()) start_feeder_locked();
        job->engine_ = weak_from_this();
        sources_.push_back(job);
    }
    dispatch(false);
}

void engine_core::start_feeder_locked() {
    // Under mutex_, so that two callers cannot both start it; the thread
    // waits for mutex_ before it looks at anything.
    feeder_ = std::thread([this] { feed_loop(); });
}

void engine_core::feed_loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
        feed_cv_.wait(lock, [&] { return feeder_stop_ || feed_wanted_; });
        if (feeder_stop_) return;
        feed_wanted_ = false;
        lock.unlock();
        dispatch(true);
        lock.lock();
    }
}

// Takes the next job this thread may produce from out of sources_, so that
// no other thread produces from it meanwhile. Under mutex_.
std::shared_ptr<pool_job> engine_core::next_source_locked(bool may_block) {
    for (auto it = sources_.begin(); it != sources_.end(); ++it) {
        if (!may_block && (*it)->may_block()) {
            feed_wanted_ = true;  // the feeder reads it
            feed_cv_.notify_one();
            continue;
        }
        auto job = std::move(*it);
        sources_.erase(it);
        return job;
    }
    return nullptr;
}

void engine_core::dispatch(bool may_block) noexcept {
    thread_local std::vector<std::byte> scratch;  // reused task buffer
    later_list later;
    for (;;) {
        std::shared_ptr<pool_job> job;
        std::uint64_t id = 0;
        bool unbounded = false;
        {
            std::lock_guard lock(mutex_);
            if (state_ == run_state::terminated || running_.size() + producing_ >= depth_ ||
                !transport_->room_for_more(running_.size() + producing_))
                break;
            job = next_source_locked(may_block);
            if (!job) break;
            id = next_id_++;
            ++producing_;
            unbounded = state_ != run_state::open;
        }
        // The job is this thread's until it goes back to sources_: its input
        // is read and its task serialized with no lock of ours held.
        output_archive ar(std::move(scratch));
        std::uint64_t seq = 0;
        pool_job::step step = pool_job::step::skip;
        transport::ticket ticket = 0;
        bool opened = false;
        try {
            ticket = transport_->open_task(ar, id);
            opened = true;
            step = job->produce(ar, seq, unbounded);
        } catch (...) {
            // No ticket (cannot happen while running_ + producing_ < capacity): retry after a result.
        }
        bool send = false;
        {
            std::lock_guard lock(mutex_);
            --producing_;
            const bool gone = job->dropped_ || state_ == run_state::terminated;
            switch (step) {
                case pool_job::step::task:
                    if (gone) {
                        later.push_back([job, seq] {
                            job->on_error(seq, std::make_exception_ptr(cancelled_error(
                                                   "mp: cancelled before a worker took it (the pool was "
                                                   "terminated, or the results' consumer is gone)")));
                        });
                    } else {
                        // The job goes back to the sources only once its task
                        // is sent: the task may borrow the job's memory
                        // (produce()'s promise) until the next produce().
                        running_.emplace(id, running_task{job, seq, ticket});
                        send = true;
                    }
                    break;
                case pool_job::step::skip:
                    if (!gone) sources_.push_front(job);
                    break;
                case pool_job::step::wait:
                    if (!gone) {
                        if (std::exchange(job->room_pending_, false))
                            sources_.push_back(job);
                        else
                            parked_.push_back(job);
                    }
                    break;
                case pool_job::step::done: later.push_back([job] { job->on_exhausted(); }); break;
            }
            if (!send && opened) transport_->close_task(ticket);
            if (idle_locked()) idle_cv_.notify_all();
        }
        if (send) {
            try {
                transport_->send_task(ticket, id, ar, job->timeout);
                if (job->wants_control() &&
                    !job->on_sent(seq, std::make_shared<engine_task_control>(weak_from_this(), id, ticket)))
                    (void)withdraw(id);
            } catch (...) {
                {
                    std::lock_guard lock(mutex_);
                    running_.erase(id);
                    if (idle_locked()) idle_cv_.notify_all();
                }
                later.push_back([job, seq, e = std::current_exception()] { job->on_error(seq, e); });
            }
            std::lock_guard lock(mutex_);
            if (!job->dropped_ && state_ != run_state::terminated) sources_.push_front(job);
        }
        scratch = ar.take_buffer();
        if (!opened) break;
    }
    run_all(later);
}

void engine_core::room_available(pool_job* job) {
    {
        std::lock_guard lock(mutex_);
        auto it = std::find_if(parked_.begin(), parked_.end(), [&](auto& p) { return p.get() == job; });
        if (it == parked_.end()) {
            // Being produced by another thread, which may be about to park
            // it: it must not park it then (the wake-up would be lost).
            job->room_pending_ = true;
            return;
        }
        sources_.push_back(std::move(*it));
        parked_.erase(it);
    }
    dispatch(false);
}

void engine_core::drop(pool_job* job) {
    std::vector<running_task> withdrawn;
    {
        std::lock_guard lock(mutex_);
        job->dropped_ = true;
        std::erase_if(sources_, [&](auto& p) { return p.get() == job; });
        std::erase_if(parked_, [&](auto& p) { return p.get() == job; });
        // As Python's Executor.map when its iterator is closed: the items no
        // worker has taken are cancelled.
        for (auto it = running_.begin(); it != running_.end();) {
            if (it->second.job.get() == job && transport_->withdraw(it->second.ticket, it->first)) {
                withdrawn.push_back(std::move(it->second));
                it = running_.erase(it);
            } else {
                ++it;
            }
        }
        if (idle_locked()) idle_cv_.notify_all();
    }
    for (auto& t : withdrawn) t.job->on_withdrawn(t.seq);
    if (!withdrawn.empty()) dispatch(false);
}

void engine_core::close() noexcept {
    if (inherited()) return;
    {
        std::lock_guard lock(mutex_);
        if (state_ != run_state::open) return;
        state_ = run_state::closed;
        // Everything queued must now run to the end: lift the windows.
        for (auto& j : parked_) sources_.push_back(std::move(j));
        parked_.clear();
    }
    dispatch(false);
}

void engine_core::cancel_pending() noexcept {
    if (inherited()) return;
    std::vector<std::shared_ptr<pool_job>> dropped;
    std::vector<running_task> withdrawn;
    {
        std::lock_guard lock(mutex_);
        // Every task no worker has taken, however far ahead it was sent.
        for (auto it = running_.begin(); it != running_.end();) {
            if (transport_->withdraw(it->second.ticket, it->first)) {
                withdrawn.push_back(std::move(it->second));
                it = running_.erase(it);
            } else {
                ++it;
            }
        }
        dropped.assign(sources_.begin(), sources_.end());
        dropped.insert(dropped.end(), parked_.begin(), parked_.end());
        for (auto& j : dropped) j->dropped_ = true;
        sources_.clear();
        parked_.clear();
        if (idle_locked()) idle_cv_.notify_all();
    }
    auto why = std::make_exception_ptr(
        cancelled_error("mp: cancelled by shutdown(cancel_futures=true) before a worker took it"));
    for (auto& t : withdrawn) t.job->on_withdrawn(t.seq);
    for (auto& j : dropped) j->on_abandoned(why, true);
}

bool engine_core::withdraw(std::uint64_t id) noexcept {
    running_task t;
    {
        std::lock_guard lock(mutex_);
        auto it = running_.find(id);
        if (it == running_.end() || !transport_->withdraw(it->second.ticket, id)) return false;
        t = std::move(it->second);
        running_.erase(it);
        if (idle_locked()) idle_cv_.notify_all();
    }
    t.job->on_withdrawn(t.seq);
    dispatch(false);
    return true;
}

bool engine_core::stop_task(std::uint64_t id) noexcept {
    std::lock_guard lock(mutex_);
    auto it = running_.find(id);
    if (it == running_.end()) return false;
    return transport_->stop_task(
        it->second.ticket, id,
        std::make_exception_ptr(cancelled_error(
            "mp: the task was stopped by future.terminate() while it ran: its worker was stopped and replaced")));
}

void engine_core::join() {
    if (inherited()) return;
    if (transport_->on_event_thread())
        throw value_error(
            "mp: join() or shutdown(wait=true) was called from a done-callback of the same pool or executor: "
            "it would wait for the thread that runs the callback. Call close() or shutdown(false) there, and "
            "wait from another thread");
    {
        std::unique_lock lock(mutex_);
        if (state_ == run_state::open)
            throw value_error("mp: join() on a pool that is still open: call close() (or terminate()) first");
        idle_cv_.wait(lock, [&] { return idle_locked() || state_ == run_state::terminated; });
    }
    stop_feeder();
    if (transport_->on_event_thread()) keep_alive_ = shared_from_this();
    transport_->stop_after_tasks();
}

void engine_core::stop_feeder() noexcept {
    {
        std::lock_guard lock(mutex_);
        feeder_stop_ = true;
    }
    feed_cv_.notify_all();
    // The feeder runs no callbacks, so it never gets here itself.
    if (feeder_.joinable() && feeder_.get_id() != std::this_thread::get_id()) feeder_.join();
}

void engine_core::terminate() noexcept {
    if (inherited()) return;
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
    stop_feeder();
    // From a done-callback the event thread is detached, not joined: it holds
    // the engine until it ends (on_events_end).
    if (transport_->on_event_thread() && !keep_alive_) {
        try {
            keep_alive_ = shared_from_this();
        } catch (...) {  // during destruction: no owner left to keep
        }
    }
    transport_->stop_now();
    // What is still in flight will never get a result.
    std::vector<running_task> lost;
    {
        std::lock_guard lock(mutex_);
        for (auto& [id, t] : running_) lost.push_back(std::move(t));
        running_.clear();
    }
    auto why = terminated_error();
    for (auto& t : lost) t.job->on_error(t.seq, why);
    for (auto& j : dropped) j->on_abandoned(why, false);
}

// ---- events from the transport -------------------------------------------------

engine_core::running_task engine_core::finish_locked(std::uint64_t id) {
    auto it = running_.find(id);
    if (it == running_.end()) return {};  // already failed (its worker was reported lost), or withdrawn
    running_task t = std::move(it->second);
    running_.erase(it);
    if (idle_locked()) idle_cv_.notify_all();
    return t;
}

bool engine_core::refill_due_locked() const noexcept {
    // Refilled a batch at a time: tasks put in a burst wake a sleeping worker
    // once for the batch, where one task per result woke it for each (the
    // parent, the slower side for tiny tasks, paid a system call per task).
    return running_.size() + producing_ + refill_batch(depth_) <= depth_;
}

void engine_core::on_result(std::uint64_t id, bool ok, input_archive& body) noexcept {
    running_task t;
    bool refill = false;
    {
        std::lock_guard lock(mutex_);
        t = finish_locked(id);
        refill = refill_due_locked();
    }
    if (refill) dispatch(false);  // refill first: the workers do not wait for the decoding
    if (!t.job) return;
    if (ok) {
        try {
            t.job->on_value(t.seq, body);
        } catch (...) {
            t.job->on_error(t.seq, std::current_exception());
        }
    } else {
        std::exception_ptr e;
        try {
            exception_record record;
            body(record);
            e = rebuild_exception(record);
        } catch (...) {
            e = std::current_exception();
        }
        t.job->on_error(t.seq, e);
    }
}

void engine_core::on_task_lost(std::uint64_t id, std::exception_ptr why) noexcept {
    running_task t;
    bool refill = false;
    {
        std::lock_guard lock(mutex_);
        t = finish_locked(id);
        refill = refill_due_locked();
    }
    if (refill) dispatch(false);
    if (t.job) t.job->on_error(t.seq, std::move(why));
}

void engine_core::on_events_end() noexcept {
    // Detached by a done-callback that stopped the engine: the last owner may be this thread.
    auto last = std::move(keep_alive_);
}

}  // namespace mp::detail
