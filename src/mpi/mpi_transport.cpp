// mpi_transport: the engine's transport (src/engine/transport.hpp) over MPI
// ranks, one per mpi_pool_executor. mp::mpi_pool_executor is mp's executor
// engine — the same jobs, the same task and result messages, the same
// cancellation and shutdown — with this transport instead of shared memory.
//
// A task is handed to the boss_transport shared by every executor of this
// process, which sends it to a worker rank with room or keeps it queued on
// rank 0. A queued task can still be withdrawn (cancel); a task sent to a
// rank counts as taken (the rank starts it as soon as its local worker is
// free).
#include "engine/transport.hpp"
#include "mp/mpi.hpp"
#include "mpi/boss.hpp"
#include "worker/protocol.hpp"

namespace mp::detail {
namespace {

// Tasks the engine may have in flight per worker rank, counting those
// queued on rank 0. Trade-off: more lets a lazy map read further ahead and
// keeps ranks fed when results come back in bursts; fewer keeps less input
// read ahead of its consumer.
constexpr std::size_t capacity_per_rank = 32;

// A thread keeps the buffer of its last task message for the next one up
// to this size (a map's chunks are a few KiB each).
constexpr std::size_t spare_limit = std::size_t{256} << 10;

class mpi_transport final : public transport, public task_source {
public:
    mpi_transport(boss_transport& boss, int workers, const mpi_pool_executor_options& options)
        : boss_(boss), workers_(workers), options_(options) {
        output_archive probe;
        probe(options_.initializer);
        if (!probe.fds().empty())
            throw value_error(
                "mp::mpi_pool_executor: the initializer's bound arguments (mp::bind) hold an mp::queue, lock, "
                "value or shared memory, which travel as file descriptors and cannot reach another rank; bind "
                "plain values");
    }

    ~mpi_transport() override { boss_.close(exec_, true); }

    void start(transport_events& events) override {
        events_ = &events;
        exec_ = boss_.open(this, workers_, options_.max_tasks_per_child, options_.initializer);
    }

    std::size_t capacity() const noexcept override { return capacity_per_rank * static_cast<std::size_t>(workers_); }

    ticket open_task(output_archive& out, std::uint64_t id) override {
        worker::write_task_header(out, id, 0);  // no claim table across hosts: the rank's local pool claims
        return 0;
    }

    void send_task(ticket, std::uint64_t id, const output_archive& out,
                   std::optional<std::chrono::nanoseconds> timeout) override {
        // The envelope first ([u32 executor][i64 deadline]), then the task
        // message; its large blocks stay borrowed (sent from where they are).
        // Written into this thread's buffer of the last task (its memory
        // is mapped and large enough already); the boss copies what it keeps.
        thread_local std::vector<std::byte> spare;
        output_archive message(std::move(spare));
        message(exec_, timeout ? static_cast<std::int64_t>(timeout->count()) : std::int64_t{-1});
        out.for_each_piece([&](const std::byte* p, std::size_t n) { message.saveBinary(p, n); });
        boss_.submit(exec_, id, message);
        if (message.buffer().size() <= spare_limit) spare = message.take_buffer();
    }

    void close_task(ticket) noexcept override {}

    bool withdraw(ticket, std::uint64_t id) noexcept override { return boss_.withdraw(exec_, id); }

    bool taken(ticket, std::uint64_t id) const noexcept override { return boss_.sent(exec_, id); }

    // The rank's local pool stops the process running it (or drops the task
    // if it has not started); the boss reports it back as lost.
    bool stop_task(ticket, std::uint64_t id, std::exception_ptr why) noexcept override {
        return boss_.stop(exec_, id, std::move(why));
    }

    void stop_after_tasks() noexcept override { end(false); }
    void stop_now() noexcept override { end(true); }

    bool on_event_thread() const noexcept override { return boss_.on_service_thread(); }

    // Rank 0's leader/follower: see boss_transport::receive_while_waiting.
    void receive_while_waiting(const std::atomic<bool>& done,
                               std::optional<std::chrono::steady_clock::time_point> deadline) noexcept override {
        boss_.receive_while_waiting(done, deadline);
    }

    std::vector<int> worker_ids() const override {
        const auto& workers = boss_.view().link.workers;
        return {workers.begin(), workers.begin() + workers_};
    }

    // task_source: from the boss's service thread.
    void on_result(std::uint64_t id, bool ok, input_archive& in) noexcept override {
        events_->on_result(id, ok, in);
    }
    void on_lost(std::uint64_t id, std::exception_ptr why) noexcept override {
        events_->on_task_lost(id, std::move(why));
    }

private:
    void end(bool terminate) noexcept {
        if (ended_) return;
        ended_ = true;
        boss_.close(exec_, terminate);  // no result is delivered after this
        if (events_) events_->on_events_end();
    }

    boss_transport& boss_;
    const int workers_;
    const mpi_pool_executor_options options_;
    transport_events* events_ = nullptr;
    std::uint32_t exec_ = 0;
    bool ended_ = false;  // stop_after_tasks/stop_now are called by the engine's one stopping thread
};

int choose_workers(const boss_transport& boss, const mpi_pool_executor_options& options) {
    if (options.max_workers < 0)
        throw value_error("mp: mpi_pool_executor: max_workers must be positive (or 0: every worker rank)");
    if (options.max_tasks_per_child < 0)
        throw value_error("mp: mpi_pool_executor: max_tasks_per_child must be positive (or 0 for no limit)");
    const auto& view = boss.view();
    for (const auto& report : view.reports)
        if (auto why = mpi_wire::compare_builds(view.mine, report); !why.empty()) throw mpi_error(why);
    const int available = static_cast<int>(view.link.workers.size());
    if (options.max_workers > available)
        throw value_error("mp: mpi_pool_executor: asked for " + std::to_string(options.max_workers) +
                          " workers, but there are " + std::to_string(available) +
                          " worker ranks (static mode: mpiexec -n <workers + 1>; dynamic mode: the first "
                          "executor's max_workers decides how many ranks are spawned)");
    return options.max_workers == 0 ? available : options.max_workers;
}

}  // namespace

mpi_engine::mpi_engine(const mpi_pool_executor_options& options) {
    if (options.max_workers < 0)
        throw value_error("mp: mpi_pool_executor: max_workers must be positive (or 0: every worker rank)");
    auto& boss = boss_transport::get(options.max_workers);
    const int workers = choose_workers(boss, options);
    engine_ = std::make_unique<pool_engine>(workers, std::make_unique<mpi_transport>(boss, workers, options));
}

mpi_engine::~mpi_engine() = default;

void mpi_engine::add(const std::shared_ptr<pool_job>& job, const char* what) { engine_->add(job, what); }
void mpi_engine::close() noexcept { engine_->close(); }
void mpi_engine::join() { engine_->join(); }
void mpi_engine::terminate() noexcept { engine_->terminate(); }
void mpi_engine::cancel_pending() noexcept { engine_->cancel_pending(); }
bool mpi_engine::closed() const noexcept { return engine_->closed(); }
int mpi_engine::workers() const noexcept { return engine_->workers(); }

}  // namespace mp::detail
