// mpi_engine_core: one mpi_pool_executor's jobs and their tasks in flight,
// the engine-facing half of the MPI executor (boss.hpp is the transport).
//
// It runs the same jobs as mp::pool and process_pool_executor (call_job,
// range_job from mp/detail/task.hpp): the worker ranks receive the same task
// messages and send back the same result messages.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <unordered_map>

#include "mp/mpi.hpp"
#include "mpi/boss.hpp"

namespace mp::detail {

class mpi_engine_core final : public task_source, public std::enable_shared_from_this<mpi_engine_core> {
public:
    explicit mpi_engine_core(const mpi_pool_executor_options& options) : options_(options) {
        if (options.max_workers < 0)
            throw value_error("mp: mpi_pool_executor: max_workers must be positive (or 0: every worker rank)");
        if (options.max_tasks_per_child < 0)
            throw value_error("mp: mpi_pool_executor: max_tasks_per_child must be positive (or 0 for no limit)");
    }

    void start() {
        transport_ = &boss_transport::get(options_.max_workers);
        const auto& view = transport_->view();
        for (const auto& report : view.reports)
            if (auto why = mpi_wire::compare_builds(view.mine, report); !why.empty()) throw mpi_error(why);
        const int available = static_cast<int>(view.link.workers.size());
        if (options_.max_workers > available)
            throw value_error("mp: mpi_pool_executor: asked for " + std::to_string(options_.max_workers) +
                              " workers, but there are " + std::to_string(available) +
                              " worker ranks (static mode: mpiexec -n <workers + 1>; dynamic mode: the first "
                              "executor's max_workers decides how many ranks are spawned)");
        workers_ = options_.max_workers == 0 ? available : options_.max_workers;
        exec_ = transport_->open(shared_from_this(), workers_, options_.max_tasks_per_child, options_.initializer);
    }

    void add(const std::shared_ptr<pool_job>& job, const char* what) {
        {
            std::lock_guard lock(mutex_);
            if (state_ != run_state::open)
                throw closed_error(std::string("mp: mpi_pool_executor.") + what +
                                   ": the executor was shut down; no new tasks can be submitted to it");
            sources_.push_back(job);
        }
        transport_->dispatch();
    }

    void close() noexcept {
        {
            std::lock_guard lock(mutex_);
            if (state_ != run_state::open) return;
            state_ = run_state::closed;  // windows are lifted: what was queued runs to the end
        }
        try {
            transport_->dispatch();
        } catch (...) {
        }
    }

    void join() {
        {
            std::unique_lock lock(mutex_);
            if (state_ == run_state::open) throw value_error("mp: join() on an executor that is still open");
            idle_cv_.wait(lock, [&] { return idle_locked() || state_ == run_state::terminated; });
            if (closed_on_ranks_) return;
            closed_on_ranks_ = true;
        }
        transport_->close(exec_, false);
    }

    void terminate() noexcept {
        std::vector<std::shared_ptr<pool_job>> dropped;
        bool close_ranks = false;
        {
            std::lock_guard lock(mutex_);
            if (state_ != run_state::terminated) {
                state_ = run_state::terminated;
                dropped.assign(sources_.begin(), sources_.end());
                sources_.clear();
            }
            close_ranks = !std::exchange(closed_on_ranks_, true);
        }
        idle_cv_.notify_all();
        if (close_ranks && transport_) transport_->close(exec_, true);
        std::vector<running_task> lost;
        {
            std::lock_guard lock(mutex_);
            for (auto& [id, t] : running_) lost.push_back(std::move(t));
            running_.clear();
        }
        auto why = std::make_exception_ptr(closed_error(
            "mp: the mpi_pool_executor was terminated before this task finished; its result is lost"));
        for (auto& t : lost) t.job->on_error(t.seq, why);
        for (auto& j : dropped) j->on_abandoned(why, false);
    }

    void cancel_pending() noexcept {
        std::vector<std::shared_ptr<pool_job>> dropped;
        {
            std::lock_guard lock(mutex_);
            dropped.assign(sources_.begin(), sources_.end());
            sources_.clear();
        }
        idle_cv_.notify_all();
        auto why = std::make_exception_ptr(
            cancelled_error("mp: cancelled by shutdown(cancel_futures=true) before a worker rank took it"));
        for (auto& j : dropped) j->on_abandoned(why, true);
    }

    bool closed() const noexcept {
        std::lock_guard lock(mutex_);
        return state_ != run_state::open;
    }
    int workers() const noexcept { return workers_; }

    // ---- task_source: called by the transport ----

    pull next_task(output_archive& out, std::uint64_t id, std::optional<std::chrono::nanoseconds>& timeout) override {
        std::vector<std::shared_ptr<pool_job>> exhausted;
        pull result = pull::nothing;
        {
            std::lock_guard lock(mutex_);
            const bool unbounded = state_ != run_state::open;
            // Each job at most once per call; a job whose window is full
            // stays in line (a window's room is not announced to this engine,
            // so the transport asks again).
            for (std::size_t tries = sources_.size(); tries > 0 && !sources_.empty(); --tries) {
                auto job = sources_.front();
                std::uint64_t seq = 0;
                // A fresh archive per attempt (a produce that fails may leave
                // bytes behind), kept until the next call: `out` may borrow from it.
                auto& attempt = attempt_.emplace();
                auto step = job->produce(attempt, seq, unbounded);
                if (step == pool_job::step::task) {
                    attempt.for_each_piece([&](const std::byte* p, std::size_t n) { out.saveBinary(p, n); });
                    running_.emplace(id, running_task{job, seq});
                    timeout = job->timeout;
                    result = pull::task;
                    break;
                }
                if (step == pool_job::step::skip) continue;  // a cancelled call: done next time
                sources_.pop_front();
                if (step == pool_job::step::done) {
                    exhausted.push_back(std::move(job));
                } else {
                    sources_.push_back(std::move(job));
                    result = pull::waiting;
                }
            }
            if (idle_locked()) idle_cv_.notify_all();
        }
        for (auto& j : exhausted) j->on_exhausted();
        return result;
    }

    void on_result(std::uint64_t id, bool ok, input_archive& in) override {
        std::shared_ptr<pool_job> job;
        std::uint64_t seq = 0;
        {
            std::lock_guard lock(mutex_);
            auto it = running_.find(id);
            if (it == running_.end()) return;
            job = std::move(it->second.job);
            seq = it->second.seq;
            running_.erase(it);
        }
        if (ok) {
            try {
                job->on_value(seq, in);
            } catch (...) {
                job->on_error(seq, std::current_exception());
            }
        } else {
            std::exception_ptr e;
            try {
                exception_record record;
                in(record);
                e = rebuild_exception(record);
            } catch (...) {
                e = std::current_exception();
            }
            job->on_error(seq, e);
        }
        std::lock_guard lock(mutex_);
        if (idle_locked()) idle_cv_.notify_all();
    }

private:
    enum class run_state { open, closed, terminated };
    struct running_task {
        std::shared_ptr<pool_job> job;
        std::uint64_t seq = 0;
    };

    bool idle_locked() const { return sources_.empty() && running_.empty(); }

    const mpi_pool_executor_options options_;
    boss_transport* transport_ = nullptr;  // set by start()
    std::uint32_t exec_ = 0;               // set by start()
    int workers_ = 0;                      // set by start()

    mutable std::mutex mutex_;
    std::condition_variable idle_cv_;
    run_state state_ = run_state::open;                        // guarded by mutex_
    std::deque<std::shared_ptr<pool_job>> sources_;            // guarded by mutex_
    std::unordered_map<std::uint64_t, running_task> running_;  // guarded by mutex_
    bool closed_on_ranks_ = false;                             // guarded by mutex_
    std::optional<output_archive> attempt_;                    // guarded by mutex_ (and the transport's dispatch)
};

mpi_engine::mpi_engine(const mpi_pool_executor_options& options)
    : core_(std::make_shared<mpi_engine_core>(options)) {
    core_->start();
}

mpi_engine::~mpi_engine() {
    if (core_) core_->terminate();
}

void mpi_engine::add(const std::shared_ptr<pool_job>& job, const char* what) { core_->add(job, what); }
void mpi_engine::close() noexcept { core_->close(); }
void mpi_engine::join() { core_->join(); }
void mpi_engine::terminate() noexcept { core_->terminate(); }
void mpi_engine::cancel_pending() noexcept { core_->cancel_pending(); }
bool mpi_engine::closed() const noexcept { return core_->closed(); }
int mpi_engine::workers() const noexcept { return core_->workers(); }

}  // namespace mp::detail
