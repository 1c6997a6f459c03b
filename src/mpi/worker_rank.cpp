// The life of a worker rank: report its build-ids, then serve the boss.
//
// A rank never runs a task itself: a task that crashes would kill the rank,
// and a dead rank ends the whole MPI job. Each executor of the boss gets, on
// every rank it uses, a local pool of one worker process (mp's engine with
// the shared-memory transport, started by the forkserver, a thread-free
// helper: this process has MPI's threads). The local pool enforces the
// deadline, replaces a crashed or timed-out process and applies
// max_tasks_per_child; what it reports (a value, the task's exception,
// mp::worker_crashed, mp::timeout_error) goes back to the boss as the same
// result message a local worker sends.
//
// Threads: the main thread receives (tasks and control messages) and feeds
// the local pools; when no message waits and tasks are out, it receives the
// local pools' results itself for a moment (the engine's leader/follower,
// task_control::help_wait), so a short task's result needs no wake-up of the
// pool's result thread; otherwise that thread sends the results to the boss
// itself (MPI_THREAD_MULTIPLE): the last result out never waits for the
// main thread to wake up, and one with more tasks out joins a batch that the
// main thread, polling, sends within result_batch::max_age.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "log.hpp"
#include "mpi/idle_backoff.hpp"
#include "mpi/layout.hpp"
#include "mpi/mpi_runtime.hpp"
#include "worker/protocol.hpp"

namespace mp::detail::mpi_worker {
namespace {

namespace w = worker;

/// Small results that come from the local pools back to back leave
/// together, as one `results` message: over shared memory each MPI message
/// costs rank 0's service thread a receive and its map consumer a wake-up,
/// so a map of tiny tasks (chunksize 1) paid them per result, and a map of
/// chunks one task message per result (rank 0 refills a rank's slots as its
/// results are delivered: several results in one message let several tasks
/// leave in one message too). Whichever thread received the result (the
/// main thread helping, or a local pool's result thread) adds it. A batch
/// leaves as soon as no task is out on this rank (a round trip never
/// waits), when it is full, or when the main thread finds it max_age old
/// or receives no result within a help. Guarded by serving::batch_mutex.
class result_batch {
public:
    static constexpr std::size_t max_item = std::size_t{4} << 10;  // a larger result goes alone
    static constexpr std::size_t max_items = 32;
    static constexpr auto max_age = std::chrono::microseconds(20);

    [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
    [[nodiscard]] bool takes(const output_archive& ar) const noexcept {
        return ar.size() <= max_item && ar.borrowed_blocks().empty();
    }
    void add(const output_archive& ar) {
        add_written([&](output_archive& out) {
            ar.for_each_piece([&](const std::byte* p, std::size_t n) { out.saveBinary(p, n); });
        });
    }
    /// Adds the message that `write(archive)` writes, of at most max_item
    /// bytes, straight into the batch (no archive of its own to copy from).
    template <class Write>
    void add_written(Write&& write) {
        if (count_ == 0) first_ = std::chrono::steady_clock::now();
        const std::size_t at = bytes_->buffer().size();
        (*bytes_)(std::uint64_t{0});  // its size, known once it is written
        write(*bytes_);
        const std::uint64_t size = bytes_->buffer().size() - at - sizeof size;
        std::memcpy(bytes_->buffer().data() + at, &size, sizeof size);
        ++count_;
    }
    [[nodiscard]] std::chrono::steady_clock::time_point due_at() const noexcept { return first_ + max_age; }
    [[nodiscard]] bool due() const noexcept {
        return count_ >= max_items || (count_ > 0 && std::chrono::steady_clock::now() >= due_at());
    }
    /// Hands the batch's bytes to `send(bytes, offset, size, tag)`, which
    /// sends them from that buffer (one item goes as a plain `result`, its
    /// size prefix left out) and returns a buffer for the next batch.
    template <class Send>
    void flush(Send&& send) {
        if (count_ == 0) return;
        const std::size_t used = bytes_->buffer().size();
        const bool one = count_ == 1;
        count_ = 0;
        auto bytes = bytes_->take_buffer();
        constexpr std::size_t prefix = sizeof(std::uint64_t);
        auto next = send(std::move(bytes), one ? prefix : 0, one ? used - prefix : used,
                         one ? int{mpi_wire::result} : int{mpi_wire::results});
        bytes_.emplace(std::move(next));
    }

private:
    std::optional<output_archive> bytes_{std::in_place};
    std::size_t count_ = 0;
    std::chrono::steady_clock::time_point first_{};
};

struct serving {
    mpi_wire::link link;
    mpi_wire::send_queue sends;  // results, completed by the main thread's polling
    idle_backoff backoff;
    // Large tasks are received into named shared memory that the local
    // worker process maps (see run_mapped_task).
    mpi_wire::block_pool blocks{mpi_wire::block_pool::kind::shared_memory};
    // Tasks handed to the local pools without an outcome yet, and whether an
    // outcome came since the main thread last looked (it helps receive them).
    std::atomic<std::size_t> outstanding{0};
    std::atomic<bool> result_seen{false};
    std::thread::id main_thread{};
    std::mutex batch_mutex;  // held while a batch is filled or sent
    result_batch batch;      // guarded by batch_mutex
};

// How long the main thread receives the local pools' results before it
// polls MPI again. Trade-off: a tiny task's result comes within a few
// microseconds; a longer help delays a message from rank 0 (a stop_task, a
// task for another executor) by as much. The engine's spin history makes a
// help end at once where results keep coming later than that.
constexpr auto local_help = std::chrono::microseconds(50);

serving* current = nullptr;  // set once by serve(), before any local pool exists

[[noreturn]] void lost_boss(const char* what) {
    detail::log(log_level::error, std::string("mp: MPI worker rank lost rank 0 (") + what + "); exiting");
    std::fflush(stderr);
    std::_Exit(1);
}

void send_now(const output_archive& ar, int tag) noexcept {
    try {
        current->sends.send(ar, current->link.boss, tag, current->link.comm);
    } catch (const std::exception& e) {
        lost_boss(e.what());
    }
    current->backoff.activity();
}

// Sends the batch (from its own buffer); the caller holds batch_mutex.
void flush_locked() noexcept {
    try {
        current->batch.flush([](std::vector<std::byte>&& bytes, std::size_t offset, std::size_t size, int tag) {
            current->sends.send_owned(std::move(bytes), offset, size, current->link.boss, tag, current->link.comm);
            current->backoff.activity();
            return current->sends.reusable();
        });
    } catch (const std::exception& e) {
        lost_boss(e.what());
    }
}

void flush_results() noexcept {
    std::lock_guard lock(current->batch_mutex);
    flush_locked();
}

void flush_results_if_due() noexcept {
    std::lock_guard lock(current->batch_mutex);
    if (current->batch.due()) flush_locked();
}

// After a result joined the batch (under `lock`): sends the batch now, or
// leaves it to the main thread.
void added_to_batch(std::unique_lock<std::mutex>& lock) noexcept {
    // The last task out: nobody waits for more (a round trip goes at once).
    if (current->outstanding.load(std::memory_order_relaxed) == 0 || current->batch.due()) {
        flush_locked();
    } else if (std::this_thread::get_id() != current->main_thread) {
        lock.unlock();
        current->backoff.activity();  // the main thread polls, and sends the batch when due
    }
}

/// A task's value as the local pool delivered it: a small one is written
/// straight into the batch (no result archive of its own, no copy of it).
void send_value_to_boss(std::uint32_t exec, std::uint64_t id, std::span<const std::byte> value) noexcept {
    auto write = [&](output_archive& out) {
        out(exec);  // the envelope: rank 0 numbers tasks per executor
        w::write_result_header(out, id, 0, w::result_status::ok);
        out.saveBinary(value.data(), value.size());  // a large value is sent from the local result's bytes
    };
    constexpr std::size_t header = 4 + 1 + 8 + 1 + 4;  // [u32 executor][u8 kind][u64 id][u8 status][u32 claim]
    try {
        std::unique_lock lock(current->batch_mutex);
        if (value.size() + header <= result_batch::max_item) {
            current->batch.add_written(write);
            added_to_batch(lock);
            return;
        }
        flush_locked();  // the results that came first leave first
    } catch (const std::exception& e) {
        lost_boss(e.what());
    }
    try {
        output_archive out;
        write(out);
        if (out.size() < mpi_wire::send_queue::in_place_from || std::this_thread::get_id() == current->main_thread)
            return send_now(out, mpi_wire::result);
        // A local pool's result thread sends a large value from the local
        // result itself (a 256 MiB vector is not copied once more), and
        // waits until it has left: the local pool reuses that memory once
        // this returns. Not the main thread: it receives rank 0's tasks,
        // which rank 0 may be waiting to send, so it sends a copy.
        auto sending = current->sends.send_in_place(out, current->link.boss, mpi_wire::result, current->link.comm);
        current->backoff.activity();
        current->sends.wait(*sending);
    } catch (const std::exception& e) {
        lost_boss(e.what());
    }
}

void send_to_boss(const output_archive& ar) noexcept {
    try {
        std::unique_lock lock(current->batch_mutex);
        if (current->batch.takes(ar)) {
            current->batch.add(ar);
            added_to_batch(lock);
            return;
        }
        flush_locked();  // the results that came first leave first
    } catch (const std::exception& e) {
        lost_boss(e.what());
    }
    send_now(ar, mpi_wire::result);
}

void send_failure(std::uint32_t exec, std::uint64_t id, std::exception_ptr e) noexcept {
    try {
        output_archive out;
        out(exec);  // the envelope: rank 0 numbers tasks per executor
        w::write_result_header(out, id, 0, w::result_status::failed);
        out(capture_exception(std::move(e)));
        send_to_boss(out);
    } catch (const std::exception& ex) {
        detail::log(log_level::warning, std::string("mp: MPI worker rank could not report a task's failure: ") + ex.what());
    }
}

/// The entry of a large task, in the local worker process: the task message
/// ([code_ref entry][payload]) lies in the shared block the rank received it
/// into; the process maps it and runs the task's own entry on it there (the
/// arguments are decoded straight from the block, no copy in between).
void run_mapped_task(input_archive& in, task_result_sink& sink) {
    std::string name;
    std::uint64_t offset = 0, size = 0;
    in(name, offset, size);
    mpi_wire::mapped_block block(name);
    if (offset > block.size() || size > block.size() - offset)
        throw serialization_error("mp: MPI worker: a large task's bounds lie outside its shared block " + name);
    input_archive task(std::span<const std::byte>(block.data() + offset, size));
    code_ref ref;
    task(ref);
    resolve_as<task_entry>(ref)(task, sink);  // sends the result while `block` is mapped
}

/// One task from the boss, handed to a local pool as it came: the bytes of
/// the task message are passed through (a large one as a reference to the
/// shared block it was received into), and the result message goes back
/// with the boss's task id.
class forwarded_job final : public pool_job {
public:
    forwarded_job(std::uint32_t exec, std::uint64_t id, std::shared_ptr<mpi_wire::message> msg,
                  std::span<const std::byte> body)
        : exec_(exec), id_(id), msg_(std::move(msg)), body_(body) {}

    step produce(output_archive& out, std::uint64_t& seq, bool) noexcept override {
        if (produced_) return step::done;
        produced_ = true;
        seq = 0;
        if (msg_->block && !msg_->block->shm_name().empty()) {
            const auto offset = static_cast<std::uint64_t>(body_.data() - msg_->block->data());
            out(code_ref_of(sendable<&run_mapped_task>()), msg_->block->shm_name(), offset,
                static_cast<std::uint64_t>(body_.size()));
        } else {
            out.saveBinary(body_.data(), body_.size());  // borrowed while msg_ lives
        }
        return step::task;
    }
    void on_value(std::uint64_t, input_archive& in) override {
        finished();
        send_value_to_boss(exec_, id_, in.take(in.remaining()));
        msg_.reset();
    }
    void on_error(std::uint64_t, std::exception_ptr e) noexcept override {
        finished();
        send_failure(exec_, id_, std::move(e));
        msg_.reset();
    }
    void on_abandoned(std::exception_ptr why, bool) noexcept override { on_error(0, std::move(why)); }

    bool wants_control() const noexcept override { return true; }
    bool on_sent(std::uint64_t, const std::shared_ptr<task_control>& control) noexcept override {
        std::lock_guard lock(mutex_);
        if (stop_wanted_) return false;  // the local engine withdraws it: on_withdrawn reports it
        control_ = control;
        return true;
    }

    /// The main thread receives the local pool's results until one comes
    /// (any task's) or `deadline`.
    void help(std::chrono::steady_clock::time_point deadline) noexcept {
        std::shared_ptr<task_control> control;
        {
            std::lock_guard lock(mutex_);
            control = control_;
        }
        if (control) control->help_wait(current->result_seen, deadline);
    }

    [[nodiscard]] bool done() const noexcept { return done_.load(std::memory_order_acquire); }

    /// Rank 0 asked to stop the task (future.terminate()): the local engine
    /// withdraws it if its process has not taken it, else stops that process
    /// (SIGTERM, then SIGKILL) and replaces it; either way on_error reports
    /// it. If it is not yet handed to the local workers, on_sent refuses it.
    void stop() noexcept {
        std::shared_ptr<task_control> control;
        {
            std::lock_guard lock(mutex_);
            stop_wanted_ = true;
            control = std::move(control_);
        }
        if (!control) return;
        if (!control->withdraw()) (void)control->stop();
    }

private:
    void finished() noexcept {
        if (done_.exchange(true, std::memory_order_acq_rel)) return;
        current->outstanding.fetch_sub(1, std::memory_order_relaxed);
        current->result_seen.store(true, std::memory_order_release);
    }

    const std::uint32_t exec_;
    const std::uint64_t id_;
    std::atomic<bool> done_{false};
    std::shared_ptr<mpi_wire::message> msg_;
    std::span<const std::byte> body_;
    bool produced_ = false;  // local engine only
    std::mutex mutex_;       // on_sent (a local engine thread) against stop() (the main thread)
    bool stop_wanted_ = false;                 // guarded by mutex_
    std::shared_ptr<task_control> control_;    // guarded by mutex_
};

/// One executor of the boss, on this rank.
struct local_executor {
    std::unique_ptr<pool_engine> pool;
    std::exception_ptr start_error;  // the pool could not start: its tasks fail with this
    // Tasks handed to the pool, by rank 0's id, for stop_task; a finished
    // one expires (the pool lets go of it) and is swept out as more come.
    std::unordered_map<std::uint64_t, std::weak_ptr<forwarded_job>> jobs;
    std::size_t sweep_at = 64;
    std::weak_ptr<forwarded_job> last;  // the task handed last: whose control the main thread helps through
};

class server {
public:
    void handle(mpi_wire::message& m) {
        auto msg = std::make_shared<mpi_wire::message>(std::move(m));
        input_archive in(msg->span());
        switch (msg->tag) {
            case mpi_wire::open: return open(in);
            case mpi_wire::task: return task(in, msg);
            case mpi_wire::tasks: return tasks(in, msg);
            case mpi_wire::close: return close(in);
            case mpi_wire::stop_task: return stop_task(in);
            case mpi_wire::stop: stopped_ = true; return;
            case mpi_wire::hello: return;  // rank 0's welcome: the connection is open
            default: detail::log(log_level::warning, std::string("mp: MPI worker rank ignored a message with tag ") + std::to_string(msg->tag));
        }
    }
    [[nodiscard]] bool stopped() const noexcept { return stopped_; }

    /// Receives the local pools' results for a moment (see local_help):
    /// true when one came.
    bool help_local_pools() noexcept {
        if (current->outstanding.load(std::memory_order_relaxed) == 0) return false;
        current->result_seen.store(false, std::memory_order_relaxed);
        auto deadline = std::chrono::steady_clock::now() + local_help;
        {
            std::lock_guard lock(current->batch_mutex);
            if (!current->batch.empty()) deadline = std::min(deadline, current->batch.due_at());
        }
        for (auto& [id, ex] : executors_) {
            auto job = ex.last.lock();
            if (!job || job->done()) continue;
            job->help(deadline);
            if (current->result_seen.load(std::memory_order_acquire)) return true;
        }
        return current->result_seen.load(std::memory_order_acquire);
    }

    void terminate_all() noexcept {
        for (auto& [id, ex] : executors_)
            if (ex.pool) ex.pool->terminate();
        executors_.clear();
    }

private:
    void open(input_archive& in) {
        flush_results();  // starting a pool takes a while: what is batched goes first
        std::uint32_t id = 0;
        std::int32_t max_tasks = 0;
        mp::function<void()> initializer;
        in(id, max_tasks, initializer);
        local_executor ex;
        try {
            ex.pool = std::make_unique<pool_engine>(engine_config{.workers = 1,
                                                                  .context = mp::context(start_method::forkserver),
                                                                  .initializer = std::move(initializer),
                                                                  .max_tasks_per_child = max_tasks,
                                                                  .pool_names = false,
                                                                  .sender_yields = true});
        } catch (...) {
            ex.start_error = std::current_exception();
        }
        executors_[id] = std::move(ex);
    }

    void task(input_archive& in, const std::shared_ptr<mpi_wire::message>& msg) {
        std::uint32_t exec = 0;
        std::int64_t timeout_ns = -1;
        std::uint8_t kind = 0;
        std::uint64_t id = 0;
        std::uint32_t claim = 0;  // rank 0 has no claim table: the local pool claims the task
        in(exec, timeout_ns, kind, id, claim);
        auto body = in.take(in.remaining());
        auto it = executors_.find(exec);
        if (it == executors_.end()) {
            send_failure(exec, id, std::make_exception_ptr(mpi_error("mp: an MPI worker rank received a task for an "
                                                               "executor it does not know")));
            return;
        }
        if (it->second.start_error) {
            send_failure(exec, id, it->second.start_error);
            return;
        }
        auto job = std::make_shared<forwarded_job>(exec, id, msg, body);
        if (timeout_ns >= 0) job->timeout = std::chrono::nanoseconds(timeout_ns);
        auto& ex = it->second;
        if (ex.jobs.size() >= ex.sweep_at) {
            std::erase_if(ex.jobs, [](const auto& j) { return j.second.expired(); });
            ex.sweep_at = std::max<std::size_t>(64, 2 * ex.jobs.size());
        }
        ex.jobs[id] = job;
        ex.last = job;
        current->outstanding.fetch_add(1, std::memory_order_relaxed);
        try {
            ex.pool->add(job, "task");
        } catch (...) {
            job->on_error(0, std::current_exception());
        }
    }

    // Several tasks in one message: each is handed on as it would be alone
    // (its bytes stay in the message, which lives while any of them runs).
    // Every size is checked before the first task is handed on.
    void tasks(input_archive& in, const std::shared_ptr<mpi_wire::message>& msg) {
        for (auto bytes : mpi_wire::split_batch(in.take(in.remaining()), "MPI worker rank: a batch of tasks from rank 0")) {
            input_archive one(bytes);
            task(one, msg);
        }
    }

    void stop_task(input_archive& in) {
        std::uint32_t exec = 0;
        std::uint64_t id = 0;
        in(exec, id);
        auto it = executors_.find(exec);
        if (it == executors_.end()) return;
        auto j = it->second.jobs.find(id);
        if (j == it->second.jobs.end()) return;
        if (auto job = j->second.lock()) job->stop();  // else it finished: its result is on its way
        it->second.jobs.erase(j);
    }

    void close(input_archive& in) {
        flush_results();  // joining a pool may take a while: what is batched goes first
        std::uint32_t exec = 0;
        std::uint8_t terminate = 0;
        in(exec, terminate);
        auto it = executors_.find(exec);
        if (it == executors_.end()) return;
        if (auto& pool = it->second.pool) {
            if (terminate) {
                pool->terminate();
            } else {
                pool->close();
                try {
                    pool->join();
                } catch (const std::exception& e) {
                    detail::log(log_level::warning, std::string("mp: MPI worker rank: closing a local pool: ") + e.what());
                }
            }
        }
        executors_.erase(it);
    }

    std::map<std::uint32_t, local_executor> executors_;
    bool stopped_ = false;
};

}  // namespace

void serve(const mpi_wire::link& link, int my_rank) {
    static serving state{link, {}, {}};
    state.main_thread = std::this_thread::get_id();
    current = &state;
    int status = 0;
    {
        server srv;
        try {
            output_archive hello;
            hello(mpi_wire::make_hello(my_rank));
            mpi_wire::send(hello, link.boss, mpi_wire::hello, link.comm);
            mpi_wire::message m;
            while (!srv.stopped()) {
                const auto ticket = state.backoff.ticket();
                state.sends.progress();
                bool got = false;
                try {
                    got = mpi_wire::try_receive(m, link.boss, link.comm, &state.blocks);
                } catch (const std::exception& e) {
                    lost_boss(e.what());
                }
                if (got) {
                    state.backoff.activity();
                    srv.handle(m);
                    flush_results_if_due();
                } else if (srv.help_local_pools()) {
                    flush_results_if_due();
                    continue;  // a result came (send_to_boss counts it as activity)
                } else {
                    flush_results();
                    state.blocks.trim();
                    if (state.sends.idle())
                        state.backoff.idle(ticket);
                    else
                        std::this_thread::yield();  // a large result is on its way: progress() it without a nap
                }
            }
        } catch (const std::exception& e) {
            detail::log(log_level::warning, std::string("mp: MPI worker rank ") + std::to_string(my_rank) + " failed: " + e.what());
            status = 1;
        }
        srv.terminate_all();
        flush_results();
    }
    state.sends.drain(std::chrono::seconds(1));  // rank 0 is finalizing: it takes what is sent by now
    if (link.comm != MPI_COMM_WORLD) {
        MPI_Comm comm = link.comm;
        MPI_Comm_disconnect(&comm);
    }
    MPI_Finalize();
    std::exit(status);
}

}  // namespace mp::detail::mpi_worker
