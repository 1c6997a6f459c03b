// worker/shm_channel.hpp — the shared-memory transport between a pool and its
// workers on one machine.
//
// Tasks go through one shared queue (mp::detail::queue_core) that every
// worker takes from, so work spreads by itself; results come back through a
// second one that only the parent reads. Neither costs a system call while
// the other side is busy. A third, small memfd holds one slot per worker
// (the task it is taking or running) and one claim per task in flight
// (who took it, protocol.hpp): a worker writes the task's id in its slot
// while it still reads the message, then claims the task; if it dies
// anywhere in between or after, the parent knows from the two which task
// was lost, and the task never runs twice.
#pragma once

#include <cstdint>
#include <memory>

#include "mp/detail/unique_fd.hpp"
#include "mp/function.hpp"
#include "mp/queue.hpp"
#include "sys/sys.hpp"
#include "transport/shm/large_results.hpp"
#include "worker/protocol.hpp"

namespace mp::detail::worker {

/// What a worker process is started with (its process argument): the three
/// shared objects, its slot, and its options.
struct worker_setup {
    int task_fd = -1;     // in the parent (and a fork child): borrowed fds
    int result_fd = -1;
    int slots_fd = -1;
    int large_fd = -1;           // the slot's large-result area
    std::uint32_t generation = 0;  // of this worker in its slot (1 for the first)
    std::uint32_t slot = 0;
    std::uint32_t slot_count = 0;
    std::uint32_t claim_count = 0;
    std::int32_t max_tasks = 0;
    mp::function<void()> initializer;
    std::shared_ptr<std::vector<unique_fd>> owned;  // in a spawn/forkserver child: the received fds

    template <class Archive>
    void save(Archive& ar) const {
        ar(ar.add_fd(task_fd), ar.add_fd(result_fd), ar.add_fd(slots_fd), ar.add_fd(large_fd), generation, slot,
           slot_count, claim_count, max_tasks, initializer);
    }
    template <class Archive>
    void load(Archive& ar) {
        std::uint32_t t = 0, r = 0, s = 0, l = 0;
        ar(t, r, s, l, generation, slot, slot_count, claim_count, max_tasks, initializer);
        owned = std::make_shared<std::vector<unique_fd>>();
        owned->push_back(ar.take_fd(t));
        owned->push_back(ar.take_fd(r));
        owned->push_back(ar.take_fd(s));
        owned->push_back(ar.take_fd(l));
        task_fd = (*owned)[0].get();
        result_fd = (*owned)[1].get();
        slots_fd = (*owned)[2].get();
        large_fd = (*owned)[3].get();
    }
};

/// The slots of all workers of one pool and the claims of its tasks in
/// flight, in a memfd.
class slot_table {
public:
    /// Creates a table of `count` slots and `claims` claims.
    slot_table(std::uint32_t count, std::uint32_t claims);
    /// Maps the table received by a worker.
    slot_table(unique_fd fd, std::uint32_t count, std::uint32_t claims);
    ~slot_table();
    slot_table(const slot_table&) = delete;
    slot_table& operator=(const slot_table&) = delete;

    [[nodiscard]] task_doorbell& doorbell() noexcept { return *doorbell_; }
    /// Before a task is sent: records the sending thread's CPU, where no
    /// worker spins (task_doorbell::sender_cpu).
    void note_sender_cpu() noexcept;
    /// After a task or stop message was put: wakes a sleeping worker unless
    /// the spinning one (or the one taking quick tasks back to back) will
    /// take the task, or drain a queue no longer than a refill burst while
    /// a sleeper is on call (task_doorbell::on_call). `all`: wakes every
    /// sleeping worker.
    void ring(std::size_t tasks_waiting, bool all) noexcept;
    /// Whether any task is queued or running (its claim not retired).
    [[nodiscard]] bool tasks_in_flight() const noexcept;
    [[nodiscard]] worker_slot& operator[](std::uint32_t i) noexcept { return slots_[i]; }
    [[nodiscard]] task_claim& claim(std::uint32_t i) noexcept { return claims_[i]; }
    [[nodiscard]] std::uint32_t claim_count() const noexcept { return claim_count_; }
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

private:
    unique_fd fd_;
    task_doorbell* doorbell_ = nullptr;
    worker_slot* slots_ = nullptr;
    task_claim* claims_ = nullptr;
    std::uint32_t claim_count_ = 0;
    std::size_t backlog_ = 2;  // tasks waiting that the spinning worker drains alone
    std::size_t size_ = 0;
};

/// The worker's end of the shared-memory transport.
class shm_worker_channel final : public worker_channel {
public:
    explicit shm_worker_channel(const worker_setup& setup);
    /// A worker that ends (told to stop, or its maxtasksperchild reached)
    /// leaves the spinner role it may hold: rings would count on it.
    ~shm_worker_channel() override;
    bool receive(received_task& task) override;
    void send(const output_archive& result) override;
    void finished() noexcept override;

private:
    // Takes the next task's message if there is one now; false when none.
    bool take(received_task& task, bool& stop);
    // Waits at the doorbell until a task may be there.
    void wait_for_task();
    // Whether this worker runs on the CPU of the thread that sends tasks.
    bool beside_sender() noexcept;
    void leave_spinner_role() noexcept;
    // As the spinner: tells rings whether its tasks are tiny (task_doorbell::spinner_outpaces).
    void say_whether_outpacing() noexcept;

    queue_core tasks_;
    queue_core results_;
    slot_table slots_;
    large_result_area large_;
    worker_slot& mine_;
    std::uint32_t index_;
    std::uint32_t generation_;
    sys::spin_history spin_history_;  // does spinning for the next task pay off?
    std::int64_t last_ran_ns_ = INT64_MAX;  // how long its last task ran (none yet: long)
};

/// The process target of every pool worker: ignores SIGINT, attaches to the
/// pool's shared objects, runs the initializer, then the worker loop.
void pool_worker_main(worker_setup& setup);

/// Steady-clock nanoseconds, comparable between processes of one machine.
std::int64_t steady_now_ns() noexcept;

}  // namespace mp::detail::worker

namespace mp::detail::worker {
/// "killed by signal 9 (SIGKILL: Killed)" or "exited with code 3".
std::string describe_exit(int exit_code);
}  // namespace mp::detail::worker
