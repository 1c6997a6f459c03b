#include "mpi/boss.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include "log.hpp"
#include "mpi/layout.hpp"
#include "worker/protocol.hpp"

namespace mp::detail {
namespace {

// Tasks sent to one worker rank without a result yet. Trade-off: more keeps
// a rank busy while results travel back (tiny tasks, TCP between hosts);
// fewer keeps more tasks queued here, where they can still be withdrawn
// (cancel), and spreads uneven tasks better across ranks.
constexpr std::size_t depth_per_rank = 16;

// Queued tasks up to this size that leave for one rank together go as one
// `tasks` message, up to batch_limit bytes (one copy and one MPI_Isend).
// A larger task goes alone, from its own bytes.
constexpr std::size_t batch_item_limit = std::size_t{32} << 10;
constexpr std::size_t batch_limit = std::size_t{128} << 10;
// A small task for a rank that has at least this many tasks in flight waits
// in the rank's batch until the next poll of a receiving thread and leaves
// with the tasks handed out meanwhile: a map's consumer hands out one chunk
// per result it takes, and results come back several per message. The next
// poll comes within microseconds while results come in (at worst after one
// nap of the service thread, idle_backoff::max_sleep). Trade-off: lower
// batches more (one MPI message, one receive and one rendezvous per batch
// instead of per task) and delays a task that is not behind others; the
// rank still has this many to run first.
constexpr std::size_t batch_behind = 4;
constexpr std::size_t batch_tasks = 16;  // a batch this full leaves at once

// How long a thread waiting in future::get polls MPI for results before it
// sleeps and leaves them to the service thread. Trade-off: a tiny task's
// result comes back within tens of microseconds (a TCP round trip between
// hosts is over 10); longer burns a core for a slow task (the spin history
// then skips the spin for a while).
constexpr auto help_spin = std::chrono::microseconds(100);
// How long the service thread stays parked after a waiting thread received
// its result: the next get() of a caller waiting for each result comes
// within microseconds. A result nobody waits for with get() (a callback, a
// map) waits at most this long once waiting threads stop coming.
constexpr auto help_linger = std::chrono::milliseconds(1);

std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// The executors whose results this thread is delivering (nested when a
// done-callback waits for another result and receives it): close() waits
// for the deliveries of other threads only.
thread_local std::vector<std::uint32_t> delivering_here;

// A task's bytes, kept to be sent later: written once (a vector sized
// first would be zero-filled, then overwritten).
std::vector<std::byte> copy_of(const output_archive& message) {
    std::vector<std::byte> bytes;
    bytes.reserve(message.size());
    message.for_each_piece([&](const std::byte* p, std::size_t n) { bytes.insert(bytes.end(), p, p + n); });
    return bytes;
}

boss_transport* instance = nullptr;  // guarded by instance_mutex
std::mutex instance_mutex;

}  // namespace

boss_transport& boss_transport::get(int wanted_workers) {
    std::lock_guard lock(instance_mutex);
    if (!instance) {
        const auto& view = mpi_runtime::workers_for(wanted_workers);
        instance = new boss_transport(view);  // ends in stop_at_exit, before MPI_Finalize
        mpi_runtime::at_finalize(&boss_transport::stop_at_exit);
    }
    return *instance;
}

boss_transport::boss_transport(const mpi_runtime::boss_view& view) : view_(view) {
    for (int r : view.link.workers) ranks_.push_back({r, 0});
    batches_.resize(ranks_.size());
    service_ = std::thread([this] {
        service_id_.store(std::this_thread::get_id());
        service_loop();
    });
}

void boss_transport::stop_at_exit() {
    std::lock_guard lock(instance_mutex);
    if (!instance) return;
    instance->stop_ = true;
    instance->backoff_.activity();
    instance->call_service();
    if (instance->service_.joinable()) instance->service_.join();
    // The worker ranks are still polling (they stop after this): what is
    // still on its way reaches them.
    instance->sends_.drain(std::chrono::seconds(5));
    // The instance stays allocated: an executor that outlives main (a static)
    // may still reach it, and finds no service thread.
}

boss_transport::source_entry* boss_transport::find_locked(std::uint32_t exec) noexcept {
    for (auto& s : sources_)
        if (s.exec == exec) return &s;
    return nullptr;
}

std::ptrdiff_t boss_transport::pick_rank_locked(std::size_t ranks) const noexcept {
    std::ptrdiff_t best = -1;
    for (std::size_t i = 0; i < ranks; ++i) {
        if (ranks_[i].in_flight >= depth_per_rank) continue;
        if (best < 0 || ranks_[i].in_flight < ranks_[static_cast<std::size_t>(best)].in_flight)
            best = static_cast<std::ptrdiff_t>(i);
    }
    return best;
}

std::uint32_t boss_transport::open(task_source* source, int workers, std::int32_t max_tasks_per_child,
                                   const mp::function<void()>& initializer) {
    std::lock_guard lock(mutex_);
    const std::uint32_t exec = next_exec_++;
    output_archive ar;
    ar(exec, max_tasks_per_child, initializer);
    for (int i = 0; i < workers; ++i)
        mpi_wire::send(ar, ranks_[static_cast<std::size_t>(i)].rank, mpi_wire::open, view_.link.comm);
    auto& entry = sources_.emplace_back();
    entry.exec = exec;
    entry.source = source;
    entry.ranks = static_cast<std::size_t>(workers);
    return exec;
}

void boss_transport::close(std::uint32_t exec, bool terminate) noexcept {
    std::unique_lock lock(mutex_);
    // A result being delivered outside the lock finishes first (but not
    // one this thread delivers: a done-callback that shuts down).
    const auto own = static_cast<std::size_t>(std::count(delivering_here.begin(), delivering_here.end(), exec));
    delivered_.wait(lock, [&] {
        auto* e = find_locked(exec);
        return !e || e->delivering <= own;
    });
    auto* entry = find_locked(exec);
    if (!entry) return;
    const std::size_t ranks = entry->ranks;
    for (auto& [id, rank_index] : entry->sent) {  // they will get no result
        --ranks_[rank_index].in_flight;
        in_flight_.fetch_sub(1, std::memory_order_relaxed);
    }
    std::erase_if(sources_, [&](auto& s) { return s.exec == exec; });
    for (auto& batch : batches_) {  // its tasks that have not left yet never will
        const auto n = std::erase_if(batch.tasks, [&](const auto& t) {
            if (t.first != exec) return false;
            batch.bytes -= t.second.bytes.size() + sizeof(std::uint64_t);
            return true;
        });
        batched_.fetch_sub(n, std::memory_order_relaxed);
    }
    try {
        output_archive ar;
        ar(exec, static_cast<std::uint8_t>(terminate ? 1 : 0));
        for (std::size_t i = 0; i < ranks; ++i) mpi_wire::send(ar, ranks_[i].rank, mpi_wire::close, view_.link.comm);
    } catch (const std::exception& e) {
        detail::log(log_level::warning, std::string("mp: mpi_pool_executor: could not close its work on the worker ranks: ") + e.what());
    }
    drain_locked();  // the ranks it used may serve others now
}

template <class Send>
void boss_transport::count_sent_locked(source_entry& entry, std::size_t rank_index, std::uint64_t id, Send&& send) {
    flush_batch_locked(rank_index);  // a rank receives its tasks in the order they were handed out
    auto& rank = ranks_[rank_index];
    entry.sent.emplace(id, rank_index);
    ++rank.in_flight;
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    try {
        send(rank.rank);
    } catch (...) {
        uncount_sent_locked(entry, id);
        throw;
    }
}

bool boss_transport::uncount_sent_locked(source_entry& entry, std::uint64_t id) noexcept {
    auto it = entry.sent.find(id);
    if (it == entry.sent.end()) return false;
    --ranks_[it->second].in_flight;
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    entry.sent.erase(it);
    return true;
}

void boss_transport::submit(std::uint32_t exec, std::uint64_t id, const output_archive& message) {
    std::shared_ptr<mpi_wire::send_queue::in_place> sending;
    {
        std::lock_guard lock(mutex_);
        auto* entry = find_locked(exec);
        if (!entry) throw closed_error("mp: mpi_pool_executor: the executor was shut down");
        auto r = entry->queue.empty() ? pick_rank_locked(entry->ranks) : -1;
        if (r >= 0 && ranks_[static_cast<std::size_t>(r)].in_flight >= batch_behind &&
            message.borrowed_blocks().empty() && message.size() <= batch_item_limit) {
            batch_locked(*entry, static_cast<std::size_t>(r), queued_task{id, copy_of(message)});
            if (batches_[static_cast<std::size_t>(r)].tasks.size() >= batch_tasks)
                flush_batch_locked(static_cast<std::size_t>(r));
        } else if (r >= 0) {
            // A large task (a 256 MiB argument) is sent from where it is,
            // and this thread waits below, without the lock, until it has
            // left. Not the service thread (it hands out tasks as results
            // come): it must keep receiving, so it sends a copy and goes on.
            const bool in_place = message.size() >= mpi_wire::send_queue::in_place_from &&
                                  !message.borrowed_blocks().empty() && !on_service_thread();
            count_sent_locked(*entry, static_cast<std::size_t>(r), id, [&](int rank) {
                if (in_place)
                    sending = sends_.send_in_place(message, rank, mpi_wire::task, view_.link.comm);
                else
                    sends_.send(message, rank, mpi_wire::task, view_.link.comm);
            });
        } else {
            entry->queue.push_back(queued_task{id, copy_of(message)});
            return;
        }
    }
    backoff_.activity();  // the service thread receives the result
    if (!sending) return;
    try {
        sends_.wait(*sending);
    } catch (...) {
        // The rank never gets the task: it no longer counts as sent, and the
        // engine fails it with this error.
        std::lock_guard lock(mutex_);
        if (auto* entry = find_locked(exec)) uncount_sent_locked(*entry, id);
        throw;
    }
}

bool boss_transport::withdraw(std::uint32_t exec, std::uint64_t id) noexcept {
    std::lock_guard lock(mutex_);
    auto* entry = find_locked(exec);
    if (!entry) return false;
    auto n = std::erase_if(entry->queue, [&](auto& q) { return q.id == id; });
    return n > 0;
}

bool boss_transport::stop(std::uint32_t exec, std::uint64_t id, std::exception_ptr why) noexcept {
    std::lock_guard lock(mutex_);  // after the task's own message, which left under this lock
    auto* entry = find_locked(exec);
    if (!entry) return false;
    auto it = entry->sent.find(id);
    if (it == entry->sent.end()) return false;
    if (entry->stopping.contains(id)) return true;  // asked already
    flush_batch_locked(it->second);                 // the task itself goes first
    try {
        output_archive ar;
        ar(exec, id);
        sends_.send(ar, ranks_[it->second].rank, mpi_wire::stop_task, view_.link.comm);
        entry->stopping.emplace(id, std::move(why));
    } catch (const std::exception& e) {
        detail::log(log_level::warning, std::string("mp: mpi_pool_executor: could not ask a worker rank to stop a task: ") + e.what());
        return false;
    }
    return true;
}

bool boss_transport::sent(std::uint32_t exec, std::uint64_t id) noexcept {
    std::lock_guard lock(mutex_);
    auto* entry = find_locked(exec);
    return entry && entry->sent.contains(id);
}

void boss_transport::drain_locked() {
    bool sent_any = false, progress = true;
    while (progress && !sources_.empty()) {
        progress = false;
        // One queued task from each executor in turn: they share the ranks fairly.
        for (std::size_t k = 0, n = sources_.size(); k < n; ++k) {
            auto& entry = sources_[(next_source_ + k) % n];
            if (entry.queue.empty()) continue;
            auto r = pick_rank_locked(entry.ranks);
            if (r < 0) continue;
            auto q = std::move(entry.queue.front());
            entry.queue.pop_front();
            try {
                batch_locked(entry, static_cast<std::size_t>(r), std::move(q));
            } catch (const std::exception& e) {
                detail::log(log_level::warning, std::string("mp: mpi_pool_executor: could not send a task to a worker rank: ") + e.what());
                continue;
            }
            sent_any = progress = true;
        }
        next_source_ = (next_source_ + 1) % std::max<std::size_t>(1, sources_.size());
    }
    for (std::size_t i = 0; i < batches_.size(); ++i) flush_batch_locked(i);
    if (sent_any) backoff_.activity();
}

void boss_transport::batch_locked(source_entry& entry, std::size_t rank_index, queued_task&& task) {
    auto& batch = batches_[rank_index];
    if (task.bytes.size() > batch_item_limit) {  // alone, from its own bytes
        count_sent_locked(entry, rank_index, task.id, [&](int rank) {
            const std::size_t size = task.bytes.size();
            sends_.send_owned(std::move(task.bytes), 0, size, rank, mpi_wire::task, view_.link.comm);
        });
        return;
    }
    if (batch.bytes + task.bytes.size() > batch_limit) flush_batch_locked(rank_index);
    batch.tasks.reserve(batch.tasks.size() + 1);  // may throw: before the task counts as sent
    entry.sent.emplace(task.id, rank_index);
    ++ranks_[rank_index].in_flight;
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    batched_.fetch_add(1, std::memory_order_relaxed);
    batch.bytes += task.bytes.size() + sizeof(std::uint64_t);
    batch.tasks.emplace_back(entry.exec, std::move(task));
}

void boss_transport::flush_batch_locked(std::size_t rank_index) noexcept {
    auto& batch = batches_[rank_index];
    if (batch.tasks.empty()) return;
    try {
        // Sent from the bytes written here (a lone task from its own), not copied again.
        if (batch.tasks.size() == 1) {
            auto& bytes = batch.tasks.front().second.bytes;
            const std::size_t size = bytes.size();
            sends_.send_owned(std::move(bytes), 0, size, ranks_[rank_index].rank, mpi_wire::task, view_.link.comm);
        } else {
            output_archive ar(sends_.reusable());
            for (const auto& [exec, task] : batch.tasks) {
                ar(static_cast<std::uint64_t>(task.bytes.size()));
                ar.saveBinary(task.bytes.data(), task.bytes.size());
            }
            const std::size_t size = ar.size();
            sends_.send_owned(ar.take_buffer(), 0, size, ranks_[rank_index].rank, mpi_wire::tasks, view_.link.comm);
            task_batches_sent_.fetch_add(1, std::memory_order_relaxed);
        }
    } catch (const std::exception& e) {
        // As a single task that cannot be sent: it is dropped from the counts.
        for (const auto& [exec, task] : batch.tasks)
            if (auto* entry = find_locked(exec)) uncount_sent_locked(*entry, task.id);
        detail::log(log_level::warning, std::string("mp: mpi_pool_executor: could not send tasks to a worker rank: ") + e.what());
    }
    batched_.fetch_sub(batch.tasks.size(), std::memory_order_relaxed);
    batch.tasks.clear();
    batch.bytes = 0;
}

void boss_transport::flush_batches() noexcept {
    if (batched_.load(std::memory_order_relaxed) == 0) return;
    {
        std::lock_guard lock(mutex_);
        for (std::size_t i = 0; i < batches_.size(); ++i) flush_batch_locked(i);
    }
    backoff_.activity();  // the service thread receives their results
}

std::size_t boss_transport::queued_tasks() noexcept {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& s : sources_) n += s.queue.size();
    return n;
}

bool boss_transport::receive_one(mpi_wire::message& m, bool wait_for_turn) {
    std::unique_lock lock(receive_mutex_, std::defer_lock);
    if (wait_for_turn)
        lock.lock();
    else if (!lock.try_lock())
        return false;
    return mpi_wire::try_receive(m, MPI_ANY_SOURCE, view_.link.comm, &blocks_);
}

void boss_transport::handle_counted(mpi_wire::message& m) noexcept {
    try {
        handle(m);
    } catch (const std::exception& e) {
        detail::log(log_level::error, std::string("mp: mpi_pool_executor: a result could not be read: ") + e.what());
    }
    m.block.reset();  // a large result's block goes back to the pool once decoded
}

void boss_transport::call_service() noexcept {
    {
        std::lock_guard lock(park_mutex_);
        service_called_ = true;
    }
    park_cv_.notify_all();
}

bool boss_transport::park_while_helped() {
    if (helpers_.load(std::memory_order_seq_cst) == 0 && helped_at_ns_.load(std::memory_order_relaxed) == 0)
        return !stop_.load(std::memory_order_seq_cst);
    std::unique_lock lock(park_mutex_);
    for (;;) {
        if (stop_.load(std::memory_order_seq_cst)) return false;
        if (std::exchange(service_called_, false)) return true;
        if (helpers_.load(std::memory_order_seq_cst) == 0) {
            std::int64_t helped = helped_at_ns_.load(std::memory_order_relaxed);
            if (helped == 0) return true;
            if (now_ns() - helped >= std::chrono::nanoseconds(help_linger).count()) {
                helped_at_ns_.compare_exchange_strong(helped, 0, std::memory_order_relaxed);
                return true;
            }
        }
        park_cv_.wait_for(lock, help_linger);
    }
}

void boss_transport::receive_while_waiting(const std::atomic<bool>& done,
                                           std::optional<std::chrono::steady_clock::time_point> deadline) noexcept {
    if (done.load(std::memory_order_acquire) || stop_.load(std::memory_order_seq_cst)) return;
    auto budget = help_spin;
    if (deadline) {
        auto left = std::chrono::duration_cast<std::chrono::microseconds>(*deadline - std::chrono::steady_clock::now());
        if (left < budget) budget = left;
        if (budget.count() <= 0) return;
    }
    flush_batches();      // a done-callback waiting here may wait for a task it handed out
    mpi_wire::message m;  // not reused across waits: a done-callback run here may wait (and receive) too
    helpers_.fetch_add(1, std::memory_order_seq_cst);
    {
        sys::spinner spin(budget, &help_spins_);
        while (!done.load(std::memory_order_acquire) && !stop_.load(std::memory_order_relaxed)) {
            flush_batches();
            sends_.progress();
            bool got = false;
            try {
                got = receive_one(m, false);
            } catch (const std::exception& e) {
                detail::log(log_level::error, std::string("mp: mpi_pool_executor: receiving from the worker ranks failed: ") + e.what());
                break;
            }
            if (got) {
                // Not counted as receiving while it delivers (a done-callback
                // may block): the service thread may take over meanwhile.
                helpers_.fetch_sub(1, std::memory_order_seq_cst);
                handle_counted(m);
                helpers_.fetch_add(1, std::memory_order_seq_cst);
                continue;
            }
            if (!spin.step()) break;
            // Yields the core at each poll: on a 2-core machine the process
            // that must answer may be waiting for it.
            std::this_thread::yield();
        }
    }
    helpers_.fetch_sub(1, std::memory_order_seq_cst);
    if (done.load(std::memory_order_acquire)) {
        helped_at_ns_.store(now_ns(), std::memory_order_relaxed);
    } else {
        call_service();       // this thread now sleeps until its result is delivered
        backoff_.activity();  // a result is expected: poll eagerly
    }
}

void boss_transport::service_loop() {
    mpi_wire::message m;
    for (;;) {
        if (!park_while_helped()) return;
        const auto ticket = backoff_.ticket();
        if (stop_.load(std::memory_order_seq_cst)) return;
        flush_batches();
        sends_.progress();
        bool got = false;
        try {
            got = receive_one(m, true);
        } catch (const std::exception& e) {
            detail::log(log_level::error, std::string("mp: mpi_pool_executor: receiving from the worker ranks failed: ") + e.what());
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        if (got) {
            backoff_.activity();
            handle_counted(m);
            continue;
        }
        blocks_.trim();
        if (!sends_.idle()) {  // a large task is on its way: progress() it without a nap
            std::this_thread::yield();
            continue;
        }
        // A spare block is let go after a while: poll (napping) until then.
        backoff_.idle(ticket, in_flight_.load(std::memory_order_relaxed) == 0 && sends_.idle() && !blocks_.holds_spare());
    }
}

void boss_transport::handle(mpi_wire::message& m) {
    if (m.tag == mpi_wire::result) {
        const std::span<const std::byte> one = m.span();
        return handle_results({&one, 1});
    }
    if (m.tag != mpi_wire::results) return;  // a late hello: every report was read at start-up
    handle_results(mpi_wire::split_batch(m.span(), "mpi_pool_executor: a batch of results from a worker rank"));
}

void boss_transport::handle_results(std::span<const std::span<const std::byte>> results) {
    struct arrived {
        std::span<const std::byte> body;  // the result message after its header
        std::uint32_t exec = 0;           // the envelope: task ids are numbered per executor
        std::uint64_t id = 0;
        std::uint8_t status = 0;
        task_source* source = nullptr;    // null: its executor was closed, or the task is not ours
        std::exception_ptr stopped;       // set when the task was stopped before it finished
    };
    // Every header read first (a corrupt one throws before anything changed).
    std::vector<arrived> ready(results.size());
    for (std::size_t i = 0; i < results.size(); ++i) {
        input_archive in(results[i]);
        std::uint8_t kind = 0;
        std::uint32_t claim = 0;
        in(ready[i].exec, kind, ready[i].id, ready[i].status, claim);
        ready[i].body = results[i].subspan(results[i].size() - in.remaining());
    }
    delivering_here.reserve(delivering_here.size() + ready.size());
    {
        std::lock_guard lock(mutex_);
        for (auto& a : ready) {
            auto* entry = find_locked(a.exec);
            if (!entry) continue;  // its executor was terminated
            if (!uncount_sent_locked(*entry, a.id)) continue;
            if (auto s = entry->stopping.find(a.id); s != entry->stopping.end()) {
                // Failed after a stop was asked: it was stopped (a task that
                // finished first keeps its own result).
                if (a.status != static_cast<std::uint8_t>(worker::result_status::ok)) a.stopped = std::move(s->second);
                entry->stopping.erase(s);
            }
            a.source = entry->source;
            ++entry->delivering;
            delivering_here.push_back(a.exec);
        }
        // The ranks get their next queued tasks (several in one message)
        // while these results are decoded.
        drain_locked();
    }
    for (std::size_t i = 0; i < ready.size(); ++i) {
        auto& a = ready[i];
        if (!a.source) continue;
        if (i > 0) {
            // A done-callback of an earlier result may have closed this
            // executor: then its source may be gone.
            std::lock_guard lock(mutex_);
            if (!find_locked(a.exec)) {
                delivering_here.erase(std::find(delivering_here.rbegin(), delivering_here.rend(), a.exec).base() - 1);
                continue;
            }
        }
        if (a.stopped) {
            a.source->on_lost(a.id, std::move(a.stopped));
        } else {
            input_archive in(a.body);
            a.source->on_result(a.id, a.status == static_cast<std::uint8_t>(worker::result_status::ok), in);
        }
        {
            std::lock_guard lock(mutex_);
            delivering_here.erase(std::find(delivering_here.rbegin(), delivering_here.rend(), a.exec).base() - 1);
            if (auto* entry = find_locked(a.exec)) --entry->delivering;
        }
        delivered_.notify_all();
    }
}

}  // namespace mp::detail
