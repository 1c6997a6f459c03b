#include "worker/shm_channel.hpp"

#include <string.h>

#include <chrono>
#include <cstring>
#include <string>

#include "sys/sys.hpp"

namespace mp::detail::worker {

std::int64_t steady_now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

slot_table::slot_table(std::uint32_t count) {
    size_ = std::max<std::size_t>(sys::page_size(), count * sizeof(worker_slot));
    fd_ = sys::memfd("mp-pool-slots", size_);
    auto* base = sys::map_shared(fd_.get(), size_);
    slots_ = static_cast<worker_slot*>(base);
    for (std::uint32_t i = 0; i < count; ++i) new (&slots_[i]) worker_slot{};
}

slot_table::slot_table(unique_fd fd, std::uint32_t count) : fd_(std::move(fd)) {
    size_ = std::max<std::size_t>(sys::page_size(), count * sizeof(worker_slot));
    if (sys::file_size(fd_.get()) < size_)
        throw serialization_error("mp: a pool worker received a slot table of the wrong size");
    slots_ = static_cast<worker_slot*>(sys::map_shared(fd_.get(), size_));
}

slot_table::~slot_table() { sys::unmap(slots_, size_); }

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
      slots_(own(setup, setup.slots_fd), setup.slot_count),
      mine_(slots_[setup.slot]) {
    if (setup.slot >= setup.slot_count) throw serialization_error("mp: a pool worker received a bad slot number");
}

namespace {
struct receive_context {
    worker_slot* slot;
    received_task* task;
    bool stop = false;
};
}  // namespace

bool shm_worker_channel::receive(received_task& task) {
    receive_context ctx{&mine_, &task};
    tasks_.get(
        [](void* context, input_archive& ar) {
            auto* c = static_cast<receive_context*>(context);
            std::uint8_t kind = 0;
            ar(kind);
            if (kind != static_cast<std::uint8_t>(task_kind::run)) {
                c->stop = true;
                return;
            }
            ar(c->task->id);
            // Still under the queue's lock: a death from here on is blamed on
            // this task, and before here the task stays in the queue.
            c->slot->started_ns.store(steady_now_ns(), std::memory_order_relaxed);
            c->slot->task.store(c->task->id, std::memory_order_release);
            auto rest = ar.take(ar.remaining());
            c->task->body.resize(rest.size());
            if (!rest.empty()) std::memcpy(c->task->body.data(), rest.data(), rest.size());
        },
        &ctx, std::nullopt);
    return !ctx.stop;
}

void shm_worker_channel::send(const output_archive& result) { results_.put(result, std::nullopt); }

void shm_worker_channel::finished() noexcept { mine_.task.store(0, std::memory_order_release); }

void pool_worker_main(worker_setup& setup) {
    sys::ignore_sigint();
    shm_worker_channel channel(setup);
    if (setup.initializer) setup.initializer();
    run_worker_loop(channel, setup.max_tasks);
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
