#include "mpi/boss.hpp"

#include <cstdio>
#include <cstring>

#include "worker/protocol.hpp"

namespace mp::detail {
namespace {

// Tasks sent to one worker rank without a result yet. Trade-off: more keeps
// a rank busy while results travel back (tiny tasks, TCP between hosts);
// fewer lets cancel() succeed for more futures (a task counts as running
// once sent) and spreads uneven tasks better across ranks.
constexpr std::size_t depth_per_rank = 16;

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
    service_ = std::thread([this] { service_loop(); });
}

void boss_transport::stop_at_exit() {
    std::lock_guard lock(instance_mutex);
    if (!instance) return;
    instance->stop_ = true;
    instance->backoff_.activity();
    if (instance->service_.joinable()) instance->service_.join();
    // The instance stays allocated: an executor that outlives main (a static)
    // may still reach it, and finds no service thread.
}

std::uint32_t boss_transport::open(std::shared_ptr<task_source> source, int workers, std::int32_t max_tasks_per_child,
                                   const mp::function<void()>& initializer) {
    std::lock_guard lock(mutex_);
    const std::uint32_t exec = next_exec_++;
    output_archive ar;
    ar(exec, max_tasks_per_child, initializer);
    for (int i = 0; i < workers; ++i) mpi_wire::send(ar, ranks_[static_cast<std::size_t>(i)].rank, mpi_wire::open, view_.link.comm);
    sources_.push_back({exec, std::move(source), static_cast<std::size_t>(workers)});
    return exec;
}

std::vector<std::uint64_t> boss_transport::close(std::uint32_t exec, bool terminate) noexcept {
    std::vector<std::uint64_t> orphans;
    std::lock_guard lock(mutex_);
    auto it = std::find_if(sources_.begin(), sources_.end(), [&](auto& s) { return s.exec == exec; });
    if (it == sources_.end()) return orphans;
    const std::size_t ranks = it->ranks;
    sources_.erase(it);
    for (auto o = owners_.begin(); o != owners_.end();) {
        if (o->second.exec != exec) {
            ++o;
            continue;
        }
        orphans.push_back(o->first);
        --ranks_[o->second.rank_index].in_flight;
        in_flight_.fetch_sub(1, std::memory_order_relaxed);
        o = owners_.erase(o);
    }
    try {
        output_archive ar;
        ar(exec, static_cast<std::uint8_t>(terminate ? 1 : 0));
        for (std::size_t i = 0; i < ranks; ++i) mpi_wire::send(ar, ranks_[i].rank, mpi_wire::close, view_.link.comm);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mp: mpi_pool_executor: could not close its work on the worker ranks: %s\n", e.what());
    }
    return orphans;
}

void boss_transport::dispatch() {
    bool sent = false, waiting = false;
    {
        std::lock_guard lock(mutex_);
        bool progress = true;
        while (progress && !sources_.empty()) {
            progress = false;
            // One task from each source in turn: executors share the ranks fairly.
            for (std::size_t k = 0, n = sources_.size(); k < n; ++k) {
                auto& entry = sources_[(next_source_ + k) % n];
                rank_load* target = nullptr;
                std::size_t target_index = 0;
                for (std::size_t i = 0; i < entry.ranks; ++i) {
                    if (ranks_[i].in_flight >= depth_per_rank) continue;
                    if (!target || ranks_[i].in_flight < target->in_flight) {
                        target = &ranks_[i];
                        target_index = i;
                    }
                }
                if (!target) continue;
                const std::uint64_t id = next_id_;
                output_archive ar;
                ar(entry.exec, std::int64_t{-1});
                worker::write_task_header(ar, id);
                std::optional<std::chrono::nanoseconds> timeout;
                auto got = entry.source->next_task(ar, id, timeout);
                if (got == task_source::pull::waiting) waiting = true;
                if (got != task_source::pull::task) continue;
                ++next_id_;
                if (timeout) {  // the envelope's deadline, known once the job has produced
                    std::int64_t ns = timeout->count();
                    std::memcpy(ar.buffer().data() + sizeof(std::uint32_t), &ns, sizeof ns);
                }
                owners_.emplace(id, owner{entry.exec, entry.source, target_index});
                ++target->in_flight;
                in_flight_.fetch_add(1, std::memory_order_relaxed);
                try {
                    mpi_wire::send(ar, target->rank, mpi_wire::task, view_.link.comm);
                } catch (...) {
                    owners_.erase(id);
                    --target->in_flight;
                    in_flight_.fetch_sub(1, std::memory_order_relaxed);
                    output_archive err;
                    err(capture_exception(std::current_exception()));
                    input_archive in(err.buffer());
                    entry.source->on_result(id, false, in);
                    continue;
                }
                sent = progress = true;
            }
            if (!sources_.empty()) next_source_ = (next_source_ + 1) % sources_.size();
        }
    }
    const bool was_waiting = waiting_.exchange(waiting, std::memory_order_relaxed);
    // Wake the service thread: to receive the results, or to retry a job
    // whose window just filled (it may sleep with nothing expected).
    if (sent || (waiting && !was_waiting)) backoff_.activity();
}

void boss_transport::service_loop() {
    mpi_wire::message m;
    for (;;) {
        const auto ticket = backoff_.ticket();
        if (stop_.load(std::memory_order_seq_cst)) return;
        bool got = false;
        try {
            got = mpi_wire::try_receive(m, MPI_ANY_SOURCE, view_.link.comm);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "mp: mpi_pool_executor: receiving from the worker ranks failed: %s\n", e.what());
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        if (got) {
            backoff_.activity();
            handle(m);
            continue;
        }
        // A job whose window was full may have room now (its consumer took
        // results); a task sent here counts as activity and cuts idle() short.
        if (waiting_.load(std::memory_order_relaxed)) dispatch();
        const bool nothing_expected =
            in_flight_.load(std::memory_order_relaxed) == 0 && !waiting_.load(std::memory_order_relaxed);
        backoff_.idle(ticket, nothing_expected);
    }
}

void boss_transport::handle(mpi_wire::message& m) {
    if (m.tag != mpi_wire::result) return;  // a late hello: every report was read at start-up
    input_archive in(m.span());
    std::uint8_t kind = 0, status = 0;
    std::uint64_t id = 0;
    in(kind, id, status);
    std::shared_ptr<task_source> source;
    {
        std::lock_guard lock(mutex_);
        auto it = owners_.find(id);
        if (it == owners_.end()) return;  // its executor was terminated
        source = std::move(it->second.source);
        --ranks_[it->second.rank_index].in_flight;
        in_flight_.fetch_sub(1, std::memory_order_relaxed);
        owners_.erase(it);
    }
    // Refill first: the rank gets its next task while this result is decoded.
    dispatch();
    source->on_result(id, status == static_cast<std::uint8_t>(worker::result_status::ok), in);
}

}  // namespace mp::detail
