#include "worker/shm_channel.hpp"

#include <signal.h>
#include <string.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <optional>
#include <string>

#include <filesystem>
#include <system_error>
#include <thread>

#include "mp/context.hpp"
#include "sys/sys.hpp"
#include "worker/test_hooks.hpp"

namespace mp::detail::test_hooks {

std::atomic<int> kill_at_take{0};
std::atomic<int> doorbell_leave_delay_us{0};

std::string kill_at_take_gate(int pool_pid) { return "/tmp/mp-kill-at-take-" + std::to_string(pool_pid); }

namespace {
void maybe_die_at_take(take_kill where) {
    if (kill_at_take.load(std::memory_order_relaxed) != static_cast<int>(where)) return;
    auto parent = mp::parent_process();
    if (!parent) return;
    std::error_code ec;
    if (!std::filesystem::remove(kill_at_take_gate(parent->pid()), ec)) return;
    sys::send_signal(sys::current_pid(), SIGKILL);
}
}  // namespace

}  // namespace mp::detail::test_hooks

namespace mp::detail::worker {

std::int64_t steady_now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

namespace {
std::size_t table_size(std::uint32_t count, std::uint32_t claims) {
    return std::max<std::size_t>(sys::page_size(),
                                 sizeof(task_doorbell) + count * sizeof(worker_slot) + claims * sizeof(task_claim));
}

// How long the one spinning worker looks for its next task before it sleeps:
// a caller waiting for each result sends the next task within a few
// microseconds, far less than a wake-up costs; an idle pool pays this once.
constexpr auto task_spin = std::chrono::microseconds(50);
// How long a sleeping worker sleeps at most while tasks are in flight
// (task_doorbell::on_call). Trade-off: a task queued behind one that turned
// out long waits at most this for a sleeping worker; shorter costs more
// wake-ups of an idle worker while the pool is busy (a thousand a second
// here, against tens of thousands when every burst of tiny tasks woke it).
constexpr auto on_call_period = std::chrono::milliseconds(1);
// A worker whose last task ran less than this is back at the queue sooner
// than a sleeping worker could be woken.
constexpr std::int64_t quick_task_ns = 20'000;
// A worker whose tasks run less than this takes them faster than the
// parent's thread hands them out (about half a microsecond per task): a
// burst of them needs no second worker. Longer ones (measured: 5 us tasks
// ran at 0.75x when one worker drained every burst alone) get one.
constexpr std::int64_t tiny_task_ns = 500;
}  // namespace

slot_table::slot_table(std::uint32_t count, std::uint32_t claims)
    : claim_count_(claims), backlog_(std::max<std::size_t>(2, claims / 4)) {
    size_ = table_size(count, claims);
    fd_ = sys::memfd("mp-pool-slots", size_);
    auto* base = sys::map_shared(fd_.get(), size_);
    doorbell_ = new (base) task_doorbell{};
    doorbell_->sender_cpu.store(-1, std::memory_order_relaxed);
    slots_ = reinterpret_cast<worker_slot*>(doorbell_ + 1);
    claims_ = reinterpret_cast<task_claim*>(slots_ + count);
    for (std::uint32_t i = 0; i < count; ++i) new (&slots_[i]) worker_slot{};
    for (std::uint32_t i = 0; i < claims; ++i) new (&claims_[i]) task_claim{};
}

slot_table::slot_table(unique_fd fd, std::uint32_t count, std::uint32_t claims)
    : fd_(std::move(fd)), claim_count_(claims), backlog_(std::max<std::size_t>(2, claims / 4)) {
    size_ = table_size(count, claims);
    if (sys::file_size(fd_.get()) < size_)
        throw serialization_error("mp: a pool worker received a slot table of the wrong size");
    doorbell_ = static_cast<task_doorbell*>(sys::map_shared(fd_.get(), size_));
    slots_ = reinterpret_cast<worker_slot*>(doorbell_ + 1);
    claims_ = reinterpret_cast<task_claim*>(slots_ + count);
}

slot_table::~slot_table() { sys::unmap(doorbell_, size_); }

void slot_table::note_sender_cpu() noexcept {
    const int cpu = sys::current_cpu();
    // Read before written: the spinning worker reads this line at each look,
    // and a store per task would take the line from it each time.
    if (doorbell_->sender_cpu.load(std::memory_order_relaxed) != cpu)
        doorbell_->sender_cpu.store(cpu, std::memory_order_relaxed);
}

bool slot_table::tasks_in_flight() const noexcept {
    for (std::uint32_t i = 0; i < claim_count_; ++i) {
        const std::uint64_t word = claims_[i].word.load(std::memory_order_relaxed);
        if ((word >> 16) != 0 && (word & 0xFFFF) != claim_withdrawn) return true;
    }
    return false;
}

void slot_table::ring(std::size_t tasks_waiting, bool all) noexcept {
    auto& bell = *doorbell_;
    // Pairs with a worker's fence between announcing itself (spinner gone,
    // or sleeper) and looking at the queue: either it sees the new task or
    // this sees it.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!all && bell.spinner.load(std::memory_order_relaxed) != 0) {
        // The spinning worker (or the one taking quick tasks back to back)
        // takes one task within microseconds.
        if (tasks_waiting <= 1) return;
        // A queue no longer than a refill burst of tiny tasks it drains by
        // itself, faster than they come, as long as a sleeper is on call
        // (looks by itself within on_call_period, should a task turn out
        // long, and rings for the rest). Such bursts woke the other worker
        // each time: on 2 cores it then took the core of the parent's
        // thread that sends them, which sets the rate.
        if (tasks_waiting <= backlog_ && bell.spinner_outpaces.load(std::memory_order_relaxed) != 0 &&
            bell.on_call.load(std::memory_order_seq_cst) != 0)
            return;
    }
    if (bell.sleepers.load(std::memory_order_relaxed) == 0) return;
    // One system call per sleep: a worker woken but not yet running (a tiny
    // task's refill comes in bursts) rings for the rest itself (receive()).
    if (!all && bell.wake_pending.exchange(1, std::memory_order_seq_cst) != 0) return;
    bell.seq.fetch_add(1, std::memory_order_seq_cst);
    sys::futex_wake(reinterpret_cast<std::uint32_t*>(&bell.seq), all ? INT_MAX : 1);
}

namespace {
unique_fd own(const worker_setup& s, int fd) {
    // A spawn/forkserver child received its own copies; a fork child
    // inherited the parent's numbers and takes copies of its own.
    (void)s;
    return sys::dup_cloexec(fd);
}
}  // namespace

shm_worker_channel::shm_worker_channel(const worker_setup& setup)
    : tasks_(own(setup, setup.task_fd)),
      results_(own(setup, setup.result_fd)),
      slots_(own(setup, setup.slots_fd), setup.slot_count, setup.claim_count),
      large_(own(setup, setup.large_fd)),
      mine_(slots_[setup.slot]),
      index_(setup.slot),
      generation_(setup.generation) {
    if (setup.slot >= setup.slot_count || setup.slot >= max_workers_per_pool)
        throw serialization_error("mp: a pool worker received a bad slot number");
}

shm_worker_channel::~shm_worker_channel() { leave_spinner_role(); }

namespace {
struct receive_context {
    worker_slot* slot;
    received_task* task;
    bool stop = false;
};
}  // namespace

bool shm_worker_channel::take(received_task& task, bool& stop) {
    receive_context ctx{&mine_, &task};
    // Never waits inside the queue: an empty queue (or one another worker is
    // taking from) returns at once, and the worker waits at the doorbell.
    const bool got = tasks_.get(
        [](void* context, input_archive& ar) {
            auto* c = static_cast<receive_context*>(context);
            std::uint8_t kind = 0;
            ar(kind);
            if (kind != static_cast<std::uint8_t>(task_kind::run)) {
                c->stop = true;
                return;
            }
            ar(c->task->id, c->task->claim);
            // Before the queue moves past the message: from here on the
            // parent can name the task this worker was taking if it dies.
            c->slot->claim.store(c->task->claim, std::memory_order_relaxed);
            c->slot->task.store(c->task->id, std::memory_order_release);
            test_hooks::maybe_die_at_take(test_hooks::take_kill::while_reading);
            auto rest = ar.take(ar.remaining());
            c->task->body.resize(rest.size());
            if (!rest.empty()) std::memcpy(c->task->body.data(), rest.data(), rest.size());
        },
        &ctx, std::chrono::steady_clock::now());
    stop = ctx.stop;
    return got;
}

bool shm_worker_channel::beside_sender() noexcept {
    const int sender = slots_.doorbell().sender_cpu.load(std::memory_order_relaxed);
    return sender >= 0 && sender == sys::current_cpu();
}

void shm_worker_channel::leave_spinner_role() noexcept {
    std::uint32_t me = index_ + 1;
    slots_.doorbell().spinner.compare_exchange_strong(me, 0, std::memory_order_seq_cst);
}

void shm_worker_channel::say_whether_outpacing() noexcept {
    auto& bell = slots_.doorbell();
    if (bell.spinner.load(std::memory_order_relaxed) != index_ + 1) return;
    const std::uint32_t outpaces = last_ran_ns_ < tiny_task_ns ? 1 : 0;
    // Written only when it changes: the parent reads this line at each ring.
    if (bell.spinner_outpaces.load(std::memory_order_relaxed) != outpaces)
        bell.spinner_outpaces.store(outpaces, std::memory_order_relaxed);
}

void shm_worker_channel::wait_for_task() {
    auto& bell = slots_.doorbell();
    std::uint32_t none = 0;
    // The spinner, or the worker that stays it while it takes quick tasks
    // back to back (receive()). Never on the CPU of the thread that sends
    // the tasks (task_doorbell::sender_cpu).
    const bool spinning = !beside_sender() && (bell.spinner.load(std::memory_order_seq_cst) == index_ + 1 ||
                                               bell.spinner.compare_exchange_strong(none, index_ + 1,
                                                                                    std::memory_order_seq_cst));
    if (spinning) {
        say_whether_outpacing();
        bool seen = false;
        {
            // Spins only while spinning pays: on a loaded machine the next
            // task rarely comes within the budget, and the spin steals CPU.
            // Yields the core at each look: the thread that sends the next
            // task may share this core (an MPI worker rank's main thread
            // receives it from rank 0 and hands it over; measured on 2
            // cores: a pure spin kept it off the core, so the spin failed,
            // stopped paying and every task needed a wake-up).
            sys::spinner spin(task_spin, &spin_history_);
            while (!(seen = tasks_.size() > 0) && spin.step() && !beside_sender()) std::this_thread::yield();
        }
        // Still the spinner while it takes the task: receive() leaves the
        // role if its tasks are not quick.
        if (seen) return;
    }
    leave_spinner_role();
    // On call (one sleeper at most) while tasks are in flight: a ring may
    // leave the sleepers asleep then (slot_table::ring), so this one looks by
    // itself before long. Set before this worker counts as a sleeper and
    // looks at the queue, cleared after it left and before it looks again.
    std::uint32_t nobody = 0;
    const bool on_call = slots_.tasks_in_flight() &&
                         bell.on_call.compare_exchange_strong(nobody, index_ + 1, std::memory_order_seq_cst);
    bell.sleepers.fetch_add(1, std::memory_order_seq_cst);
    // A ring that counted this worker among the sleepers after it last left
    // may have woken nobody: its pending mark must not outlive this look at
    // the queue (a later ring would skip this worker's wake-up for ever).
    bell.wake_pending.store(0, std::memory_order_seq_cst);
    const std::uint32_t seq = bell.seq.load(std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with slot_table::ring
    if (tasks_.size() == 0) {
        const auto* word = reinterpret_cast<const std::uint32_t*>(&bell.seq);
        // A worker that idles gives back the pages its large results kept
        // (large_results.hpp); one returning them back to back keeps them.
        if (on_call)
            (void)sys::futex_wait(word, seq, sys::clock::now() + on_call_period);
        else if (!large_.holds_spare_pages())
            (void)sys::futex_wait(word, seq, std::nullopt);
        else if (!sys::futex_wait(word, seq, sys::clock::now() + idle_shrink_after))
            large_.shrink_when_idle();
    }
    // Whether woken or not: a ring that found this worker among the sleepers
    // made no further wake-up, and this worker now looks at the queue.
    bell.wake_pending.store(0, std::memory_order_seq_cst);
    if (int delay = test_hooks::doorbell_leave_delay_us.load(std::memory_order_relaxed); delay > 0)
        std::this_thread::sleep_for(std::chrono::microseconds(delay));
    bell.sleepers.fetch_sub(1, std::memory_order_seq_cst);
    if (on_call) bell.on_call.store(0, std::memory_order_seq_cst);
}

bool shm_worker_channel::receive(received_task& task) {
    for (;;) {
        bool stop = false;
        if (!take(task, stop)) {
            wait_for_task();
            continue;
        }
        if (stop) return false;
        test_hooks::maybe_die_at_take(test_hooks::take_kill::before_claim);
        if (task.claim >= slots_.claim_count())
            throw serialization_error("mp: a pool worker received a task with a bad claim number");
        // The take: one step, after which the task is this worker's. It fails
        // when the parent withdrew the task (cancelled, or its message was
        // left behind by a worker that died reading it): skip it.
        std::uint64_t expected = claim_word(task.id, claim_queued);
        mine_.started_ns.store(steady_now_ns(), std::memory_order_relaxed);
        if (slots_.claim(task.claim).word.compare_exchange_strong(expected, claim_word(task.id, claim_taken_by(index_)),
                                                                    std::memory_order_acq_rel)) {
            // A worker whose tasks are quick stays the spinner while it runs
            // this one: it is back at the queue within microseconds.
            if (last_ran_ns_ >= quick_task_ns)
                leave_spinner_role();
            else
                say_whether_outpacing();
            // Tasks behind this one, whose rings found a wake-up pending: wake
            // a sleeping worker for them (no system call if none sleeps).
            if (const std::size_t waiting = tasks_.size(); waiting > 0) slots_.ring(waiting, false);
            return true;
        }
        mine_.task.store(0, std::memory_order_release);
    }
}

void shm_worker_channel::send(const output_archive& result) {
    // Before the result (the queue's put publishes it): the parent reads it with the result.
    last_ran_ns_ = steady_now_ns() - mine_.started_ns.load(std::memory_order_relaxed);
    slots_.claim(mine_.claim.load(std::memory_order_relaxed)).ran_ns.store(last_ran_ns_, std::memory_order_relaxed);
    if (result.size() < large_result_threshold) {
        results_.put(result, std::nullopt);
        test_hooks::maybe_die_at_take(test_hooks::take_kill::result_sent);
        return;
    }
    // Into this worker's area, where the pool decodes it without copying it
    // out first; the queue carries only a notice.
    large_.fill(result, generation_);
    test_hooks::maybe_die_at_take(test_hooks::take_kill::large_result_stored);
    output_archive notice;
    notice(static_cast<std::uint8_t>(result_kind::done_large), index_, generation_,
           static_cast<std::uint64_t>(result.size()));
    try {
        results_.put(notice, std::nullopt);
    } catch (...) {
        large_.unfill(generation_);
        throw;
    }
}

void shm_worker_channel::finished() noexcept { mine_.task.store(0, std::memory_order_release); }

void pool_worker_main(worker_setup& setup) {
    sys::ignore_sigint();
    shm_worker_channel channel(setup);
    std::optional<exception_record> init_failure;
    if (setup.initializer) {
        try {
            setup.initializer();
        } catch (...) {
            init_failure = initializer_failure(std::current_exception());
        }
    }
    run_worker_loop(channel, setup.max_tasks, init_failure ? &*init_failure : nullptr);
}

std::string describe_exit(int exit_code) {
    if (exit_code < 0) {
        int sig = -exit_code;
        const char* abbrev = ::sigabbrev_np(sig);
        const char* text = ::strsignal(sig);
        std::string out = "killed by signal " + std::to_string(sig);
        if (abbrev) out += std::string(" (SIG") + abbrev + (text ? std::string(": ") + text : std::string()) + ")";
        return out;
    }
    return "exited with code " + std::to_string(exit_code);
}

}  // namespace mp::detail::worker
