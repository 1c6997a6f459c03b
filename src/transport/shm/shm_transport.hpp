// transport/shm/shm_transport.hpp — the shared-memory transport: worker
// processes on this machine, fed from shared queues.
//
// Tasks go through one shared queue that every worker takes from (work
// spreads by itself); results and loss reports come back through a second
// one that only this process reads. A small memfd holds a slot per worker
// (the task it is taking or running) and a claim per task in flight (who
// took it; worker/protocol.hpp): taking a task is one compare-and-swap, so a
// task runs at most once, a withdrawn task never runs, and a dead worker's
// task is known. Two threads: the result thread reads results and reports
// them (decoded outside the queue's lock; a thread waiting in future::get
// may receive instead for a moment, result_receiver.cpp); the supervisor watches the
// workers, reports a dead worker's task behind its results, starts
// replacements and stops workers whose task is past its deadline or was
// stopped by stop_task(). Under the fork method only the first workers are
// forked from this process, before its threads exist; replacements come
// from the forkserver (thread-free), with the same names, fds and
// initializer (a replacement does not inherit globals changed after the
// pool started; the initializer is how a worker is prepared).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/transport.hpp"
#include "mp/context.hpp"
#include "mp/detail/unique_fd.hpp"
#include "mp/function.hpp"
#include "mp/process.hpp"
#include "mp/queue.hpp"
#include "sys/sys.hpp"
#include "transport/shm/large_results.hpp"
#include "worker/shm_channel.hpp"

namespace mp::detail {

struct shm_transport_config {
    int workers = 1;
    start_method method = start_method::fork;
    mp::function<void()> initializer;
    int max_tasks_per_child = 0;  // 0: no limit
    bool pool_names = true;       // "ForkPoolWorker-N" (mp::pool) or "ForkProcess-N" (executor)
    bool sender_yields = false;   // engine_config::sender_yields
};

class shm_transport final : public transport {
public:
    using steady = std::chrono::steady_clock;

    explicit shm_transport(shm_transport_config cfg);
    ~shm_transport() override;

    void start(transport_events& events) override;
    std::size_t capacity() const noexcept override { return depth_; }
    bool room_for_more(std::size_t in_flight) const noexcept override;
    ticket open_task(output_archive& out, std::uint64_t id) override;
    void send_task(ticket t, std::uint64_t id, const output_archive& out,
                   std::optional<std::chrono::nanoseconds> timeout) override;
    void close_task(ticket t) noexcept override;
    bool withdraw(ticket t, std::uint64_t id) noexcept override;
    bool taken(ticket t, std::uint64_t id) const noexcept override;
    bool stop_task(ticket t, std::uint64_t id, std::exception_ptr why) noexcept override;
    void stop_after_tasks() noexcept override;
    void stop_now() noexcept override;
    bool on_event_thread() const noexcept override { return std::this_thread::get_id() == collector_id_; }
    std::vector<int> worker_ids() const override;
    void receive_while_waiting(const std::atomic<bool>& done,
                               std::optional<steady::time_point> deadline) noexcept override;

private:

    struct worker_rec {
        std::unique_ptr<process> proc;
        std::uint64_t stopping_task = 0;  // being stopped for this task (deadline or stop_task)
        bool stopping_by_request = false;  // by stop_task(), not for the deadline
        std::chrono::nanoseconds stopping_timeout{};
        steady::time_point term_sent{};
        bool kill_sent = false;
        steady::time_point retry_at{};  // empty slot: when to try starting a worker again
    };
    // Parent-local state of a claim entry.
    struct claim_rec {
        std::optional<std::chrono::nanoseconds> timeout;
        bool stop = false;  // stop_task() asked for this task to be stopped
        std::size_t bytes = 0;  // the task message's size
    };

    bool inherited() const noexcept;
    // A claim is retired (its word set to withdrawn) by exactly one of: the
    // result's arrival, withdraw(), the supervisor blaming a dead worker;
    // whoever retires it frees it.
    bool retire(ticket t, std::uint64_t id, bool only_if_queued) noexcept;
    void free_claim(ticket t) noexcept;
    // The receiving side (result_receiver.cpp).
    struct taken_result {
        std::uint8_t kind = 0;
    };
    void collect_loop();
    // Under receive_mutex_: takes the next message; false when there is none by `deadline`.
    bool take_result(std::vector<std::byte>& buffer, std::optional<steady::time_point> deadline, taken_result& taken);
    void handle_taken(std::vector<std::byte>& buffer, const taken_result& taken) noexcept;
    void handle_message(std::vector<std::byte>& buffer) noexcept;
    void handle_deferred() noexcept;
    // The result thread waits while waiting threads receive; false once receiving ended.
    bool park_while_helped();
    void call_collector() noexcept;
    void end_receiving() noexcept;
    void supervise_loop();
    void handle_exit(std::uint32_t slot);
    bool lost_by(std::uint64_t task, std::uint32_t claim, std::uint32_t worker);
    std::exception_ptr take_stop_why(std::uint64_t task);
    void check_deadlines();
    void stop_all_workers() noexcept;
    std::unique_ptr<process> start_worker(std::uint32_t slot);
    std::string worker_name() const;
    void wake() noexcept;
    void post_result_queue(const output_archive& ar) noexcept;
    void collect_large(input_archive& notice);
    // Reports a task's result (its header read; `ar` at its value), or a
    // timeout_error when its worker ran it past its deadline.
    void deliver_result(std::uint64_t id, std::uint8_t status, std::uint32_t claim, input_archive& ar);
    void finish_threads() noexcept;

    const shm_transport_config cfg_;
    const int owner_pid_;
    std::size_t depth_;
    transport_events* events_ = nullptr;
    std::unique_ptr<queue_core> tasks_;
    std::unique_ptr<queue_core> results_;
    std::unique_ptr<worker::slot_table> slots_;
    std::vector<std::unique_ptr<large_result_area>> large_;  // one per slot; fixed after construction
    std::vector<std::uint32_t> generations_;  // per slot, of its current worker: written where workers start
    unique_fd wake_read_, wake_write_;

    mutable std::mutex claims_mutex_;
    std::vector<ticket> free_claims_;   // guarded by claims_mutex_
    std::vector<claim_rec> claim_recs_; // guarded by claims_mutex_
    std::unordered_map<std::uint64_t, std::exception_ptr> stop_whys_;  // guarded by claims_mutex_: by task
    std::atomic<std::size_t> timed_{0}; // tasks with a deadline in flight
    std::atomic<std::size_t> bytes_in_flight_{0};  // of the tasks sent, claims not freed yet

    mutable std::mutex workers_mutex_;
    std::vector<worker_rec> workers_;  // guarded by workers_mutex_ for reading; written by the supervisor
                                       // (and by start()/stop before and after it runs)

    std::atomic<bool> threads_started_{false};  // later fork workers come from the forkserver
    std::atomic<bool> stopping_{false};     // no more replacements: the workers are being stopped
    std::atomic<bool> terminating_{false};  // the supervisor kills every worker and ends
    std::atomic<bool> stop_requested_{false};  // stop_task() marked a claim: the supervisor looks
    std::atomic<bool> stop_asked_{false};      // stop_task() was ever called: results clear stop_whys_

    // Receiving (result_receiver.cpp).
    std::mutex receive_mutex_;                 // held by the one thread taking from results_
    std::atomic<bool> stop_taken_{false};      // written under receive_mutex_: nothing more to take
    std::atomic<std::uint32_t> handling_{0};  // taken (counted under receive_mutex_), being handled
    std::atomic<bool> any_deferred_{false};
    std::mutex hand_mutex_;
    std::vector<std::vector<std::byte>> deferred_;  // guarded by hand_mutex_: waiting for those handled
    std::atomic<int> helpers_{0};              // waiting threads receiving now
    std::atomic<std::int64_t> helped_at_{0};   // steady ns: a waiting thread last received its result
    sys::spin_history help_spins_;             // does a waiting thread's spin pay off?
    std::mutex gate_mutex_;
    // The parked result thread waits here. On the heap: a fork child that
    // inherited the transport must not destroy it (the parent's waiter is
    // recorded in it, and destroying it would wait for that waiter for ever).
    std::unique_ptr<std::condition_variable> gate_cv_ = std::make_unique<std::condition_variable>();
    bool collector_called_ = false;            // guarded by gate_mutex_: a waiting thread gave up
    bool receiving_ended_ = false;             // guarded by gate_mutex_: the stop message was taken

    std::mutex shutdown_mutex_;
    bool finished_ = false;  // guarded by shutdown_mutex_: threads joined, workers gone
    std::thread collector_;
    std::thread::id collector_id_;  // set before any task exists
    std::thread supervisor_;
};

}  // namespace mp::detail
