// mp/mpi.hpp — the executor across machines, on MPI: mp::mpi_pool_executor,
// as mpi4py.futures is for Python. Target mp::mpi (CMake:
// find_package(mp COMPONENTS mpi)), built when CMake finds MPI.
//
//     int main(int argc, char** argv) {
//         mp::init(argc, argv);
//         mp::mpi::init(argc, argv);   // rank 0 returns; every other rank serves tasks, then exits
//         mp::mpi_pool_executor ex;    // static mode: the other ranks of `mpiexec -n N ./app`
//         // mp::mpi_pool_executor ex({.max_workers = 4});   // without mpiexec: spawns 4 ranks once
//         for (double x : ex.map(simulate, params, {.chunksize = 16})) ...;
//     }
//
// Promises:
// - The executor interface is mp::process_pool_executor's, from the same
//   code (detail/executor_front.hpp): submit, submit_with, map,
//   map_unordered, starmap, shutdown, the same mp::future and
//   mp::imap_iterator; any callable and argument that process_pool_executor
//   accepts works, with no registration.
// - Every rank runs the same executable: a function travels as its offset in
//   its module. At start-up every rank reports the GNU build-ids of its
//   modules; a rank whose ids differ from rank 0's makes the executor's
//   constructor throw mp::mpi_error naming the rank, its host and both ids.
// - A worker rank runs each task in a local worker process, started by mp's
//   forkserver (a thread-free helper): a task that crashes its process fails
//   alone with mp::worker_crashed and the rank replaces the process; a task's
//   deadline ({.timeout}) is enforced on the worker's host and fails it with
//   mp::timeout_error; max_tasks_per_child replaces a process after that many
//   tasks.
// - A task counts as taken once it is sent to a worker rank (each rank gets
//   up to 16 ahead; the rest wait on rank 0, where cancel() still withdraws
//   them). A task running on a rank is stopped only by its deadline.
// - A dead *rank* ends the whole MPI job (OpenMPI's rule: mpiexec aborts
//   every rank, rank 0 included). A worker rank that loses rank 0 exits.
// - Several executors on rank 0 share the worker ranks fairly (round robin,
//   one task each in turn).
// - An idle worker rank polls briefly after its last message, then sleeps
//   between polls (under 5% of a core); tasks sent back to back never wait
//   for a sleep.
// - As with process_pool_executor, a thread waiting in future::get (or on a
//   map iterator) receives results itself for a moment, so done-callbacks
//   may run on it; a round trip then needs no thread wake-up on rank 0.
// - A large std::vector argument or result crosses ranks with MPI's single
//   copy, but is built in fresh memory where it is decoded (the local worker
//   process, then rank 0): fresh pages cost about 2 GB/s on a typical host,
//   about a quarter of MPI's, which bounds a round trip of a few hundred
//   MiB.
// Thread-safety: every member of mpi_pool_executor may be called from several
// threads at once. mp::mpi::init is called once, from main.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "mp/detail/executor_front.hpp"
#include "mp/detail/task.hpp"
#include "mp/error.hpp"
#include "mp/function.hpp"
#include "mp/future.hpp"
#include "mp/pool.hpp"
#include "mp/process_pool_executor.hpp"

namespace mp {

namespace mpi {

/// Call right after mp::init(argc, argv) in main. Under mpiexec (or srun):
/// initialises MPI; on rank 0 it returns; on every other rank it serves tasks
/// until rank 0 is done, then exits the process (never returns). In a
/// process started by MPI_Comm_spawn for dynamic mode it serves the parent
/// and exits. Started without a launcher it returns at once and MPI starts
/// only when a dynamic-mode executor needs it.
/// Throws mp::mpi_error if MPI cannot start with thread support.
void init(int argc, char** argv);

/// This process's rank in MPI_COMM_WORLD (0 when MPI has not started).
[[nodiscard]] int rank() noexcept;
/// The number of ranks of MPI_COMM_WORLD (1 when MPI has not started).
[[nodiscard]] int world_size() noexcept;
/// True when this program was started by an MPI launcher (mpiexec, srun).
[[nodiscard]] bool launched() noexcept;

}  // namespace mpi

/// Options of mp::mpi_pool_executor, in the order of SPEC §12.
struct mpi_pool_executor_options {
    /// Static mode (under mpiexec with several ranks): how many of the other
    /// ranks to use; 0: all. Dynamic mode: how many ranks to spawn (the first
    /// dynamic executor spawns them, later ones reuse them); 0: 1.
    int max_workers = 0;
    mp::function<void()> initializer{};  // run by each local worker process before its first task
    int max_tasks_per_child = 0;         // a local worker process is replaced after this many tasks; 0: never
};

namespace detail {

/// The engine of one mpi_pool_executor on rank 0: mp's executor engine
/// (pool_engine) over the MPI transport.
class mpi_engine {
public:
    explicit mpi_engine(const mpi_pool_executor_options& options);
    mpi_engine(const mpi_engine&) = delete;
    mpi_engine& operator=(const mpi_engine&) = delete;
    /// Terminates if not joined yet. Never throws.
    ~mpi_engine();

    void add(const std::shared_ptr<pool_job>& job, const char* what);
    void close() noexcept;
    void join();
    void terminate() noexcept;
    void cancel_pending() noexcept;
    [[nodiscard]] bool closed() const noexcept;
    [[nodiscard]] int workers() const noexcept;

private:
    std::unique_ptr<pool_engine> engine_;
};

}  // namespace detail

/// concurrent.futures' executor over MPI ranks (mpi4py.futures.MPIPoolExecutor).
/// submit, submit_with (a deadline is enforced on the worker's host), map,
/// map_unordered, starmap, shutdown and max_workers (worker ranks) are those
/// of every mp process executor (detail/executor_front.hpp), documented there.
class mpi_pool_executor : public detail::executor_front<detail::mpi_engine> {
public:
    /// Static mode under mpiexec with several ranks, else dynamic mode.
    /// Throws mp::mpi_error if mp::mpi::init was not called, a rank's
    /// build-ids differ from rank 0's, or spawning ranks fails;
    /// mp::value_error for a negative option.
    mpi_pool_executor() : mpi_pool_executor(mpi_pool_executor_options{}) {}
    explicit mpi_pool_executor(mpi_pool_executor_options options) : executor_front(options) {}
    mpi_pool_executor(const mpi_pool_executor&) = delete;
    mpi_pool_executor& operator=(const mpi_pool_executor&) = delete;
    /// shutdown(true) (executor_front's destructor). Never throws.
    ~mpi_pool_executor() = default;
};

}  // namespace mp
