// shm_tracker.cpp — the helper process that unlinks leaked named segments.
//
// Protocol: the program's processes share the write end of a SOCK_SEQPACKET
// socket pair (a pipe that keeps record boundaries and never raises SIGPIPE).
// Each record is one send() of at most record_max bytes, hence atomic even
// when many processes write at once: one byte 'R' (register) or 'U'
// (unregister) for a shared memory name, 'D' or 'E' for a socket in a private
// directory (a manager's), then the name or the socket's path, not
// NUL-terminated. The helper sees end-of-file when every write end is closed,
// i.e. when the last process of the program is gone however it ended, and
// removes everything still registered.
#include "shm_tracker.hpp"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "mp/error.hpp"
#include "sys/sync_sys.hpp"
#include "sys/sys.hpp"

namespace mp::detail::shm_tracker {
namespace {

// POSIX shm names are at most NAME_MAX (255) bytes after the leading '/'.
constexpr std::size_t name_max = 256;
constexpr std::size_t record_max = 1 + name_max;
constexpr std::size_t slot_size = 1 + name_max + 1;  // kind ('R' or 'D'), NUL-terminated name

// How long the main process waits at exit for the helper to finish unlinking.
// Longer makes cleanup certain even when a straggling child still holds the
// pipe; shorter bounds how much a straggler can delay the program's exit (the
// helper cleans up anyway once the straggler is gone).
constexpr std::chrono::milliseconds exit_wait{2000};

// ---- the helper process: async-signal-safe code only ------------------------

/// The names still registered, in memory from mmap (never malloc: the helper
/// is forked from a possibly multithreaded process).
struct name_table {
    char* slots = nullptr;  // capacity * slot_size bytes
    std::size_t count = 0;
    std::size_t capacity = 0;

    char* slot(std::size_t i) noexcept { return slots + i * slot_size; }

    static bool same(const char* stored, char kind, const char* name, std::size_t len) noexcept {
        if (stored[0] != kind) return false;
        for (std::size_t i = 0; i < len; ++i)
            if (stored[1 + i] != name[i]) return false;
        return stored[1 + len] == '\0';
    }

    void add(char kind, const char* name, std::size_t len) noexcept {
        if (count == capacity) {
            std::size_t bigger = capacity ? capacity * 2 : 64;
            auto* fresh = static_cast<char*>(sys::map_anonymous(bigger * slot_size));
            if (!fresh) return;  // out of memory: this name cannot be tracked
            for (std::size_t i = 0; i < count * slot_size; ++i) fresh[i] = slots[i];
            sys::unmap_anonymous(slots, capacity * slot_size);
            slots = fresh;
            capacity = bigger;
        }
        char* s = slot(count++);
        s[0] = kind;
        for (std::size_t i = 0; i < len; ++i) s[1 + i] = name[i];
        s[1 + len] = '\0';
    }

    void remove(char kind, const char* name, std::size_t len) noexcept {
        for (std::size_t i = count; i-- > 0;) {
            if (!same(slot(i), kind, name, len)) continue;
            char* last = slot(count - 1);
            char* s = slot(i);
            for (std::size_t k = 0; k < slot_size; ++k) s[k] = last[k];
            --count;
            return;
        }
    }

    void unlink_all() noexcept {
        for (std::size_t i = 0; i < count; ++i) {
            if (slot(i)[0] == 'R') sys::shm_remove_raw(slot(i) + 1);
            if (slot(i)[0] == 'D') sys::remove_socket_and_directory_raw(slot(i) + 1);
        }
        count = 0;
    }
};

[[noreturn]] void run_helper(int fd) noexcept {
    sys::become_helper(fd, "mp-shm-tracker");
    name_table table;
    char record[record_max + 1];
    for (;;) {
        long n = sys::recv_raw(fd, record, sizeof record);
        if (n <= 0) break;  // every write end is closed (or the socket broke)
        auto len = static_cast<std::size_t>(n);
        if (len < 2 || len > record_max) continue;  // not a record of ours
        if (record[0] == 'R' || record[0] == 'D')
            table.add(record[0], record + 1, len - 1);
        else if (record[0] == 'U')
            table.remove('R', record + 1, len - 1);
        else if (record[0] == 'E')
            table.remove('D', record + 1, len - 1);
    }
    table.unlink_all();
    sys::exit_raw(0);
}

// ---- the program's side ------------------------------------------------------

sys::fork_guarded_mutex start_mutex;  // a fork child never inherits it locked
std::atomic<int> write_fd{-1};     // -1: no tracker known to this process
// The helper's pid in the process that forked it; 0 elsewhere (an after-fork
// hook clears it in fork children: the helper is not their child).
std::atomic<int> helper_pid_{0};
bool at_exit_registered = false;   // guarded by start_mutex

void stop_at_exit() noexcept {
    // A fork child that calls exit() must not close its parent's tracker.
    if (helper_pid_.load() == 0) return;
    int fd = write_fd.exchange(-1);
    if (fd >= 0) unique_fd{fd}.reset();
    int pid = helper_pid_.exchange(0);
    if (pid > 0) (void)sys::reap_within(pid, exit_wait);
}

/// The write end, starting the helper if this process has none.
int ensure_running() {
    int fd = write_fd.load();
    if (fd >= 0) return fd;
    // A fork child shares the helper through its copy of the write end
    // (kept), but must neither wait for the helper nor count it as its own.
    // Registered before start_mutex is taken: the fork registry's lock is
    // taken before every fork-guarded mutex, never after one.
    static const bool hook_registered = (sys::register_after_fork([] { helper_pid_ = 0; }), true);
    (void)hook_registered;
    std::lock_guard guard(start_mutex);
    fd = write_fd.load();
    if (fd >= 0) return fd;
    auto [mine, theirs] = sys::socket_pair(/*seqpacket=*/true);
    int pid = sys::fork_raw();
    if (pid < 0) sys::throw_errno("fork", "mp shared-memory tracker");
    if (pid == 0) run_helper(theirs.get());
    theirs.reset();
    helper_pid_ = pid;
    if (!at_exit_registered) {
        std::atexit(stop_at_exit);
        at_exit_registered = true;
    }
    fd = mine.release();
    write_fd = fd;
    return fd;
}

bool send_record(int fd, char op, std::string_view name) noexcept {
    char record[record_max];
    record[0] = op;
    std::memcpy(record + 1, name.data(), name.size());
    return sys::send_raw(fd, record, 1 + name.size());
}

void check_name(std::string_view name) {
    if (name.empty() || name.size() > name_max)
        throw value_error("mp: shared memory name '" + std::string(name) +
                          "' cannot be tracked: it must be 1 to 256 bytes long, starting with '/'");
}

}  // namespace

void register_record(char op, std::string_view name) {
    int fd = ensure_running();
    if (send_record(fd, op, name)) return;
    // The helper is gone (someone killed it): start a new one and retry once.
    {
        std::lock_guard guard(start_mutex);
        if (write_fd.compare_exchange_strong(fd, -1)) unique_fd{fd}.reset();
    }
    fd = ensure_running();
    if (!send_record(fd, op, name))
        throw system_error(0, "mp: the shared-memory tracker does not accept records; '" + std::string(name) +
                                  "' would be left behind if the program were killed");
}

void unregister_record(char op, std::string_view name) {
    if (name.empty() || name.size() > name_max) return;
    int fd = write_fd.load();
    if (fd < 0) return;  // no tracker: nothing was registered by this process
    (void)send_record(fd, op, name);
}

void register_name(std::string_view name) {
    check_name(name);
    register_record('R', name);
}

void unregister_name(std::string_view name) { unregister_record('U', name); }

void register_socket_directory(std::string_view socket_path) {
    if (socket_path.empty() || socket_path.size() > name_max)
        throw value_error("mp: socket path '" + std::string(socket_path) +
                          "' cannot be tracked: it must be 1 to 256 bytes long");
    register_record('D', socket_path);
}

void unregister_socket_directory(std::string_view socket_path) { unregister_record('E', socket_path); }

int fd_for_child() noexcept {
    // Started here if need be, so that parent and children share one tracker:
    // a segment a child creates must outlive the child, not be unlinked when
    // a tracker of the child's own sees that child exit.
    try {
        return ensure_running();
    } catch (...) {
        return -1;
    }
}

void adopt(unique_fd fd) noexcept {
    if (!fd) return;
    try {
        sys::set_cloexec(fd.get(), true);
    } catch (...) {
    }
    std::lock_guard guard(start_mutex);
    int old = write_fd.exchange(fd.release());
    if (old >= 0) unique_fd{old}.reset();
    helper_pid_ = 0;
}

int helper_pid() noexcept {
    return helper_pid_.load();
}

}  // namespace mp::detail::shm_tracker
