// The shared-memory transport's receiving side: who takes results from the
// result queue, and in which order they are reported.
//
// Two kinds of thread receive. The result thread (collect_loop) always can;
// a thread of the user that waits for a task's result (future::get) may too,
// for a short spin (receive_while_waiting): then a round trip needs no
// wake-up at all (the worker spins for the next task, the waiting thread for
// the result), where otherwise the result thread would wake for the result
// and then wake the waiting thread, two cross-core wake-ups of many
// microseconds each on a virtual machine. While waiting threads receive, the
// result thread steps aside (parks) so that it does not sleep in the queue
// and get woken for every result; it comes back when no waiting thread has
// received for help_linger, or at once when a waiting thread gives up
// before its result came.
//
// One thread at a time takes from the queue (receive_mutex_), and none holds
// a lock while it decodes or reports. Messages being handled are counted
// (no lock per message); the two whose meaning depends on what came before
// them (a worker's loss behind its results, a worker's end behind its large
// results) are handled only when no other message is being handled, by
// whichever thread finishes the last of those.
#include <cstring>
#include <thread>

#include "log.hpp"
#include "transport/shm/shm_transport.hpp"
#include "worker/protocol.hpp"
#include "worker/test_hooks.hpp"

namespace mp::detail::test_hooks {
std::atomic<int> result_report_delay_ms{0};
}  // namespace mp::detail::test_hooks

namespace mp::detail {

namespace w = worker;
using namespace std::chrono_literals;

namespace {

// How long a waiting thread spins for results before it sleeps and leaves
// them to the result thread. Trade-off: a tiny task's result comes within a
// few microseconds, far less than a wake-up; longer burns a core of a thread
// whose task is slow (the spin history then skips the spin for a while).
constexpr auto help_spin = std::chrono::microseconds(50);
// How long the result thread stays parked after a waiting thread received
// its result: the next get() of a caller waiting for each result comes
// within microseconds. Results nobody waits for with get() (callbacks, map
// iterators) wait at most this long once waiting threads stop coming.
constexpr auto help_linger = std::chrono::milliseconds(1);

std::int64_t now_ns() noexcept { return w::steady_now_ns(); }

// The message is copied out under the queue's lock and decoded after it is
// released: decoding runs user types' code (and the engine then runs done-callbacks).
struct collected {
    std::vector<std::byte>* buffer;
};
void copy_message(void* context, input_archive& ar) {
    auto* c = static_cast<collected*>(context);
    auto bytes = ar.take(ar.remaining());
    c->buffer->resize(bytes.size());
    if (!bytes.empty()) std::memcpy(c->buffer->data(), bytes.data(), bytes.size());
}

bool ordered_after_earlier(std::uint8_t kind) noexcept {
    return kind == static_cast<std::uint8_t>(w::result_kind::lost) ||
           kind == static_cast<std::uint8_t>(w::result_kind::worker_gone);
}

}  // namespace

bool shm_transport::take_result(std::vector<std::byte>& buffer, std::optional<steady::time_point> deadline,
                                taken_result& taken) {
    // receive_mutex_ is held.
    if (stop_taken_.load(std::memory_order_relaxed)) return false;
    collected ctx{&buffer};
    if (!results_->get(&copy_message, &ctx, deadline)) return false;
    taken.kind = buffer.empty() ? 0 : std::to_integer<std::uint8_t>(buffer[0]);
    if (taken.kind == static_cast<std::uint8_t>(w::result_kind::stop)) {
        stop_taken_.store(true, std::memory_order_relaxed);
        return true;
    }
    // Counted before the next message is taken: a message that must come
    // after it sees it.
    handling_.fetch_add(1, std::memory_order_seq_cst);
    return true;
}

void shm_transport::handle_taken(std::vector<std::byte>& buffer, const taken_result& taken) noexcept {
    if (ordered_after_earlier(taken.kind)) {
        std::unique_lock lock(hand_mutex_);
        if (handling_.load(std::memory_order_seq_cst) != 1) {
            // Other messages are being handled (some taken before this
            // one): the last of them to finish handles this one.
            deferred_.push_back(std::move(buffer));
            any_deferred_.store(true, std::memory_order_seq_cst);
            const bool last = handling_.fetch_sub(1, std::memory_order_seq_cst) == 1;
            lock.unlock();
            if (last) handle_deferred();
            return;
        }
    }
    handle_message(buffer);
    if (handling_.fetch_sub(1, std::memory_order_seq_cst) == 1 && any_deferred_.load(std::memory_order_seq_cst))
        handle_deferred();
}

void shm_transport::handle_deferred() noexcept {
    std::vector<std::vector<std::byte>> ready;
    {
        std::lock_guard lock(hand_mutex_);
        // A message taken meanwhile is being handled: its handler comes here when done.
        if (handling_.load(std::memory_order_seq_cst) != 0) return;
        ready.swap(deferred_);
        any_deferred_.store(false, std::memory_order_seq_cst);
    }
    for (auto& message : ready) handle_message(message);
}

void shm_transport::handle_message(std::vector<std::byte>& buffer) noexcept {
    try {
        input_archive ar(buffer);
        std::uint8_t kind = 0;
        ar(kind);
        switch (static_cast<w::result_kind>(kind)) {
            case w::result_kind::done: {
                std::uint64_t id = 0;
                std::uint8_t status = 0;
                std::uint32_t claim = 0;
                ar(id, status, claim);
                if (int delay = test_hooks::result_report_delay_ms.load(std::memory_order_relaxed); delay > 0)
                    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
                deliver_result(id, status, claim, ar);
                break;
            }
            case w::result_kind::lost: {
                std::uint64_t id = 0;
                std::uint8_t reason = 0;
                std::string text;
                ar(id, reason, text);
                std::exception_ptr why = take_stop_why(id);
                if (reason != static_cast<std::uint8_t>(w::lost_reason::stopped)) why = nullptr;
                if (!why)
                    why = reason == static_cast<std::uint8_t>(w::lost_reason::timed_out)
                              ? std::make_exception_ptr(timeout_error(text))
                              : std::make_exception_ptr(worker_crashed(text));
                events_->on_task_lost(id, why);
                break;
            }
            case w::result_kind::done_large: collect_large(ar); break;
            case w::result_kind::worker_gone: {
                std::uint32_t slot = 0, generation = 0;
                ar(slot, generation);
                // Behind every notice of that worker: an area it left full has no reader.
                if (slot < large_.size()) large_[slot]->release(generation);
                break;
            }
            default: throw serialization_error("mp: pool: a message of unknown kind arrived on the result queue");
        }
    } catch (const std::exception& e) {
        detail::log(log_level::error, std::string("mp: pool: a result could not be read and was dropped: ") + e.what());
    }
}

void shm_transport::end_receiving() noexcept {
    {
        std::lock_guard lock(gate_mutex_);
        receiving_ended_ = true;
    }
    gate_cv_->notify_all();
}

void shm_transport::call_collector() noexcept {
    {
        std::lock_guard lock(gate_mutex_);
        collector_called_ = true;
    }
    gate_cv_->notify_all();
}

bool shm_transport::park_while_helped() {
    std::unique_lock lock(gate_mutex_);
    for (;;) {
        if (receiving_ended_) return false;
        if (std::exchange(collector_called_, false)) return true;
        if (helpers_.load(std::memory_order_acquire) == 0) {
            // The clock is read only while a waiting thread received lately
            // (not once per result of a map).
            std::int64_t helped = helped_at_.load(std::memory_order_relaxed);
            if (helped == 0) return true;
            if (now_ns() - helped >= std::chrono::nanoseconds(help_linger).count()) {
                helped_at_.compare_exchange_strong(helped, 0, std::memory_order_relaxed);
                return true;
            }
        }
        gate_cv_->wait_for(lock, help_linger);
    }
}

void shm_transport::collect_loop() {
    std::vector<std::byte> buffer;
    for (;;) {
        if (!park_while_helped()) break;
        taken_result taken;
        bool got = false;
        {
            std::lock_guard lock(receive_mutex_);
            try {
                got = take_result(buffer, std::nullopt, taken);
            } catch (const std::exception& e) {
                detail::log(log_level::error,
                            std::string("mp: pool: a result could not be read and was dropped: ") + e.what());
            }
        }
        if (!got) continue;  // the stop message was taken by a waiting thread: park_while_helped ends the loop
        if (taken.kind == static_cast<std::uint8_t>(w::result_kind::stop)) break;
        handle_taken(buffer, taken);
    }
    end_receiving();
    auto* events = events_;
    events->on_events_end();  // may destroy this transport: nothing of it is touched after
}

void shm_transport::receive_while_waiting(const std::atomic<bool>& done,
                                          std::optional<steady::time_point> deadline) noexcept {
    if (done.load(std::memory_order_acquire) || inherited() || stop_taken_.load(std::memory_order_relaxed)) return;
    auto budget = help_spin;
    if (deadline) {
        auto left = std::chrono::duration_cast<std::chrono::microseconds>(*deadline - steady::now());
        if (left < budget) budget = left;
        if (budget.count() <= 0) return;
    }
    // Reused from wait to wait; a wait nested in a done-callback (run by
    // this thread while it receives) takes a fresh one.
    thread_local std::vector<std::byte> spare;
    std::vector<std::byte> buffer = std::move(spare);
    helpers_.fetch_add(1, std::memory_order_seq_cst);
    {
        sys::spinner spin(budget, &help_spins_);
        while (!done.load(std::memory_order_acquire)) {
            if (results_->size() > 0 && receive_mutex_.try_lock()) {
                taken_result taken;
                bool got = false;
                try {
                    got = take_result(buffer, steady::now(), taken);
                } catch (const std::exception& e) {
                    detail::log(log_level::error,
                                std::string("mp: pool: a result could not be read and was dropped: ") + e.what());
                }
                receive_mutex_.unlock();
                if (got) {
                    if (taken.kind == static_cast<std::uint8_t>(w::result_kind::stop)) {
                        end_receiving();
                        break;
                    }
                    // Not receiving while it reports (a done-callback may
                    // block): the result thread may take over meanwhile.
                    helpers_.fetch_sub(1, std::memory_order_seq_cst);
                    handle_taken(buffer, taken);
                    helpers_.fetch_add(1, std::memory_order_seq_cst);
                    continue;
                }
            }
            if (stop_taken_.load(std::memory_order_relaxed) || !spin.step()) break;
            if (cfg_.sender_yields) std::this_thread::yield();
        }
    }
    helpers_.fetch_sub(1, std::memory_order_seq_cst);
    if (done.load(std::memory_order_acquire))
        helped_at_.store(now_ns(), std::memory_order_relaxed);
    else
        call_collector();  // this thread now sleeps until its result is reported
    spare = std::move(buffer);
}

// A result in its worker's area: decoded where it lies, with no lock held,
// then the area goes back to the worker.
void shm_transport::collect_large(input_archive& notice) {
    std::uint32_t slot = 0, generation = 0;
    std::uint64_t size = 0;
    notice(slot, generation, size);
    if (slot >= large_.size()) throw serialization_error("mp: pool: a large-result notice names no worker slot");
    auto& area = *large_[slot];
    auto bytes = area.filled(generation, static_cast<std::size_t>(size));
    if (!bytes) throw serialization_error("mp: pool: a large-result notice names an area that holds no result");
    struct release_after {
        large_result_area& area;
        std::uint32_t generation;
        ~release_after() { area.release(generation); }
    } release{area, generation};
    input_archive ar(*bytes);
    std::uint8_t kind = 0;
    std::uint64_t id = 0;
    std::uint8_t status = 0;
    std::uint32_t claim = 0;
    ar(kind, id, status, claim);
    if (kind != static_cast<std::uint8_t>(w::result_kind::done))
        throw serialization_error("mp: pool: a worker's large-result area holds no result");
    deliver_result(id, status, claim, ar);
}

// The supervisor stops a task past its deadline, but it may not get to run
// before the task ends (a loaded machine, a nice process: the 10-minute
// executor soak saw 4 late tasks in 15,000 deliver their results so). The
// worker says how long it ran the task, and a run past the deadline fails
// with timeout_error all the same, as SPEC §7 promises.
void shm_transport::deliver_result(std::uint64_t id, std::uint8_t status, std::uint32_t claim, input_archive& ar) {
    std::optional<std::chrono::nanoseconds> timeout;
    std::int64_t ran_ns = 0;
    if (claim < depth_) {
        {
            std::lock_guard lock(claims_mutex_);
            timeout = claim_recs_[claim].timeout;
        }
        if (timeout) ran_ns = slots_->claim(claim).ran_ns.load(std::memory_order_relaxed);
        retire(claim, id, false);
    }
    if (stop_asked_.load(std::memory_order_relaxed)) (void)take_stop_why(id);  // finished first
    if (timeout && ran_ns > timeout->count()) {
        using std::chrono::duration_cast;
        using std::chrono::milliseconds;
        events_->on_task_lost(
            id, std::make_exception_ptr(timeout_error(
                    "mp: the task ran " + std::to_string(duration_cast<milliseconds>(std::chrono::nanoseconds(ran_ns)).count()) +
                    " ms, past its deadline of " + std::to_string(duration_cast<milliseconds>(*timeout).count()) +
                    " ms; it ended before its worker could be stopped, and its result is dropped. Other tasks are not "
                    "affected")));
        return;
    }
    events_->on_result(id, status == static_cast<std::uint8_t>(w::result_status::ok), ar);
}

}  // namespace mp::detail
