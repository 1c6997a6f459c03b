#include "mpi/mpi_runtime.hpp"
#include "log.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace mp::detail::mpi_runtime {
namespace {

struct state {
    std::mutex mutex;
    bool init_called = false;       // guarded by mutex
    bool started = false;           // guarded by mutex: MPI_Init done (by us or the user)
    bool we_started = false;        // guarded by mutex: so we finalize it
    std::vector<std::string> argv;  // guarded by mutex: for MPI_Comm_spawn
    bool have_view = false;         // guarded by mutex
    boss_view view;                 // guarded by mutex until have_view, then read-only
    std::vector<void (*)()> before_finalize;  // guarded by mutex
};

state& get() {
    static state* s = new state;  // never destroyed: used by the atexit handler
    return *s;
}

void start_locked(state& s) {
    if (s.started) return;
    int already = 0;
    MPI_Initialized(&already);
    if (!already) {
        int provided = 0;
        mpi_wire::check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
        s.we_started = true;
        if (provided < MPI_THREAD_MULTIPLE)
            throw mpi_error("mp: this MPI library does not support MPI_THREAD_MULTIPLE, which mp::mpi needs "
                            "(OpenMPI built with thread support does)");
    } else {
        int provided = 0;
        MPI_Query_thread(&provided);
        if (provided < MPI_THREAD_MULTIPLE)
            throw mpi_error("mp: MPI was initialised without MPI_THREAD_MULTIPLE; let mp::mpi::init start MPI, or "
                            "call MPI_Init_thread with MPI_THREAD_MULTIPLE");
    }
    // A failed call must come back as an error code, so that it becomes an
    // mp::mpi_error instead of aborting the job.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    s.started = true;
}

// At exit on the boss: stop the service thread, tell every worker rank to
// stop, and finalize MPI (which in static mode waits for every rank).
void finish_at_exit() {
    auto& s = get();
    std::vector<void (*)()> hooks;
    {
        std::lock_guard lock(s.mutex);
        hooks.swap(s.before_finalize);
    }
    for (auto* f : hooks) f();
    std::lock_guard lock(s.mutex);
    if (!s.started) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (s.have_view) {
        output_archive empty;
        for (int w : s.view.link.workers) {
            try {
                mpi_wire::send(empty, w, mpi_wire::stop, s.view.link.comm);
            } catch (const std::exception& e) {
                detail::log(log_level::warning, std::string("mp: could not tell MPI rank ") + std::to_string(w) + " to stop: " + e.what());
            }
        }
        if (s.view.dynamic) MPI_Comm_disconnect(&s.view.link.comm);
    }
    // Also when the program started MPI itself: the worker ranks finalize
    // when told to stop, and MPI_Finalize is collective.
    MPI_Finalize();
}

void receive_reports(boss_view& v) {
    v.reports.clear();
    for (int w : v.link.workers) {
        auto m = mpi_wire::receive(w, mpi_wire::hello, v.link.comm);
        input_archive in(m.span());
        mpi_wire::hello_report r;
        in(r);
        v.reports.push_back(std::move(r));
    }
}

void spawn_locked(state& s, int n) {
    // Extra slots: a workstation has fewer "slots" than the ranks a user asks
    // for. Test hook: MP_MPI_TEST_SPAWN_SLOTS_ONLY=1 leaves it out, so that
    // asking for more ranks than cores makes the spawn fail (MPI_ERR_SPAWN).
    MPI_Info info = MPI_INFO_NULL;
    MPI_Info_create(&info);
    if (!std::getenv("MP_MPI_TEST_SPAWN_SLOTS_ONLY")) MPI_Info_set(info, "map_by", "slot:OVERSUBSCRIBE");
    std::string command = std::filesystem::read_symlink("/proc/self/exe").string();
    std::vector<char*> args;
    for (std::size_t i = 1; i < s.argv.size(); ++i) args.push_back(s.argv[i].data());
    args.push_back(nullptr);
    std::vector<int> codes(static_cast<std::size_t>(n), MPI_SUCCESS);
    MPI_Comm inter = MPI_COMM_NULL;
    int rc = MPI_Comm_spawn(command.c_str(), args.data(), n, info, 0, MPI_COMM_SELF, &inter, codes.data());
    MPI_Info_free(&info);
    if (rc == MPI_SUCCESS)
        for (int c : codes)
            if (c != MPI_SUCCESS) rc = c;
    if (rc != MPI_SUCCESS) {
        try {
            mpi_wire::check(rc, "MPI_Comm_spawn");
        } catch (const mpi_error& e) {
            throw mpi_error(std::string(e.what()) + " (dynamic mode: spawning " + std::to_string(n) + " worker ranks of " +
                            command + "; under mpiexec, start more ranks instead, -n N+1)");
        }
    }
    MPI_Comm_set_errhandler(inter, MPI_ERRORS_RETURN);
    s.view.link.comm = inter;
    s.view.link.boss = 0;
    s.view.link.workers.clear();
    for (int i = 0; i < n; ++i) s.view.link.workers.push_back(i);
    s.view.dynamic = true;
}

}  // namespace

void ensure_started() {
    auto& s = get();
    std::lock_guard lock(s.mutex);
    start_locked(s);
}

const boss_view& workers_for(int wanted) {
    auto& s = get();
    std::lock_guard lock(s.mutex);
    if (!s.init_called)
        throw mpi_error("mp: mp::mpi_pool_executor needs mp::mpi::init(argc, argv) in main, right after "
                        "mp::init(argc, argv): it makes the other ranks serve tasks");
    if (s.have_view) return s.view;
    start_locked(s);
    int size = 1, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank != 0) throw mpi_error("mp: mp::mpi_pool_executor is used on rank 0 only (the other ranks serve it)");
    s.view.mine = mpi_wire::make_hello(0);
    if (size > 1) {
        s.view.link.comm = MPI_COMM_WORLD;
        s.view.link.boss = 0;
        for (int r = 1; r < size; ++r) s.view.link.workers.push_back(r);
    } else {
        spawn_locked(s, wanted > 0 ? wanted : 1);
    }
    receive_reports(s.view);
    // One message back to each worker: over TCP, MPI opens a connection on
    // a peer's first send; here, at start-up, not inside the first task.
    output_archive welcome;
    for (int w : s.view.link.workers) mpi_wire::send(welcome, w, mpi_wire::hello, s.view.link.comm);
    s.have_view = true;
    return s.view;
}

void at_finalize(void (*fn)()) {
    auto& s = get();
    std::lock_guard lock(s.mutex);
    s.before_finalize.push_back(fn);
}

}  // namespace mp::detail::mpi_runtime

namespace mp::mpi {

bool launched() noexcept {
    // OpenMPI's mpiexec, or a PMI/PMIx launcher (Slurm's srun, MPICH's Hydra).
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
        if (std::getenv(v)) return true;
    return false;
}

int rank() noexcept {
    int started = 0, finalized = 0;
    MPI_Initialized(&started);
    MPI_Finalized(&finalized);
    if (!started || finalized) return 0;
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

int world_size() noexcept {
    int started = 0, finalized = 0;
    MPI_Initialized(&started);
    MPI_Finalized(&finalized);
    if (!started || finalized) return 1;
    int n = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

void init(int argc, char** argv) {
    namespace rt = detail::mpi_runtime;
    auto& s = rt::get();
    {
        std::lock_guard lock(s.mutex);
        if (s.init_called) return;
        s.init_called = true;
        for (int i = 0; i < argc; ++i) s.argv.emplace_back(argv[i]);
        if (launched()) rt::start_locked(s);
    }
    if (!launched()) {
        std::atexit(rt::finish_at_exit);
        return;  // MPI starts when a dynamic-mode executor needs it
    }
    MPI_Comm parent = MPI_COMM_NULL;
    MPI_Comm_get_parent(&parent);
    int my_rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
    if (parent != MPI_COMM_NULL) {  // spawned for a dynamic-mode executor
        MPI_Comm_set_errhandler(parent, MPI_ERRORS_RETURN);
        detail::mpi_wire::link link{parent, 0, {}};
        detail::mpi_worker::serve(link, my_rank);
    }
    if (my_rank != 0) detail::mpi_worker::serve(detail::mpi_wire::link{MPI_COMM_WORLD, 0, {}}, my_rank);
    std::atexit(rt::finish_at_exit);
    // Static mode: every rank reports its build now, at start-up; a
    // mismatch is thrown by the executor's constructor.
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) (void)rt::workers_for(0);
}

}  // namespace mp::mpi
