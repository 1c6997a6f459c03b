// mpi/mpi_runtime.hpp — MPI in this process: starting it, who is the boss,
// the worker ranks and their start-up reports, spawning ranks in dynamic
// mode, and ending it all at exit.
//
// Static mode: `mpiexec -n N ./app`; rank 0 is the boss, ranks 1..N-1 serve.
// Dynamic mode: a program with one rank (or none: no launcher at all) spawns
// its worker ranks with MPI_Comm_spawn, once per process (OpenMPI 4.1 hangs
// on repeated spawn/disconnect cycles), and talks to them through the
// intercommunicator.
#pragma once

#include <mutex>
#include <vector>

#include "mpi/wire.hpp"

namespace mp::detail::mpi_runtime {

/// The boss's view of its worker ranks.
struct boss_view {
    mpi_wire::link link;                            // comm and worker ranks in it
    std::vector<mpi_wire::hello_report> reports;    // one per worker, in link.workers' order
    mpi_wire::hello_report mine;                    // rank 0's own
    bool dynamic = false;
};

/// Starts MPI (once), with MPI_THREAD_MULTIPLE: the boss sends tasks from
/// the submitting threads while its service thread receives, and a worker
/// rank sends results from its local pool's result thread. Throws
/// mp::mpi_error if MPI cannot give that thread level.
void ensure_started();

/// The workers an executor may use, starting them in dynamic mode (spawning
/// `wanted` ranks, 1 if 0, the first time). Throws mp::mpi_error when
/// mp::mpi::init was not called or a spawn fails. Thread-safe.
const boss_view& workers_for(int wanted);

/// Registers what must happen at exit before MPI_Finalize (stop the
/// service thread). Called once by the executor machinery.
void at_finalize(void (*fn)());

}  // namespace mp::detail::mpi_runtime

namespace mp::detail::mpi_worker {

/// A worker rank's life: reports its build-ids, serves tasks from the boss
/// until told to stop (or the boss is gone), finalizes MPI and exits.
[[noreturn]] void serve(const mpi_wire::link& link, int my_rank);

}  // namespace mp::detail::mpi_worker
