// errors.cpp — the one place where a failed system call becomes an exception.
//
// The message names the call, the object it acted on and the errno text, and,
// for the failures users meet in practice, the likely cause and what to do:
//   shm_open(/mp-12-3) failed: No space left on device (errno 28). /dev/shm
//   is full: 3 MiB free of 64 MiB. Make it larger (Docker: --shm-size=1g) ...
#include "sys/sys.hpp"

#include <sys/resource.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace mp::sys {

namespace {

std::string limit_text(rlim_t value) {
    return value == RLIM_INFINITY ? std::string("unlimited") : std::to_string(value);
}

/// What usually causes `err` from `call` and what to do; empty if nothing
/// useful can be said. Reads the current limits, so the advice is concrete.
std::string likely_cause(int err, std::string_view call) {
    switch (err) {
        case EMFILE: {
            rlimit lim{};
            std::string soft = ::getrlimit(RLIMIT_NOFILE, &lim) == 0 ? limit_text(lim.rlim_cur) : "unknown";
            return "This process has as many file descriptors open as it may (ulimit -n: " + soft +
                   "). Raise the limit (ulimit -n 65536, or LimitNOFILE= in a systemd unit), or close "
                   "queues, pipes and processes you no longer need.";
        }
        case ENFILE:
            return "The whole system is out of file descriptors (sysctl fs.file-max); close some or raise the limit.";
        case ENOSPC: {
            struct statvfs fs {};
            if (::statvfs("/dev/shm", &fs) != 0) return "The shared-memory filesystem (/dev/shm) is full.";
            auto mib = [&](fsblkcnt_t blocks) { return std::to_string(blocks * fs.f_frsize / (1024 * 1024)); };
            return "/dev/shm, where shared memory lives, is full or too small: " + mib(fs.f_bavail) + " MiB free of " +
                   mib(fs.f_blocks) + " MiB. Make it larger (Docker: docker run --shm-size=1g; elsewhere: "
                   "mount -o remount,size=2g /dev/shm) or remove segments left there by other programs.";
        }
        case ENOMEM:
            if (call == "mmap" || call == "mremap")
                return "Out of memory for a mapping: the machine's memory, the address-space limit (ulimit -v) or "
                       "the number of mappings (sysctl vm.max_map_count) is exhausted.";
            return {};
        case EAGAIN:
            if (call == "fork" || call == "vfork" || call == "clone" || call == "clone3" || call == "posix_spawn") {
                rlimit lim{};
                std::string soft = ::getrlimit(RLIMIT_NPROC, &lim) == 0 ? limit_text(lim.rlim_cur) : "unknown";
                return "The limit on processes is reached (ulimit -u: " + soft +
                       ", or a container's pids limit such as Docker's --pids-limit). Start fewer processes, "
                       "join the ones that finished, or raise the limit.";
            }
            return {};
        default:
            return {};
    }
}

}  // namespace

void throw_errno(int err, const char* call, std::string_view object) {
    std::string what = call;
    if (!object.empty()) what += "(" + std::string(object) + ")";
    what += " failed: ";
    what += std::strerror(err);
    what += " (errno " + std::to_string(err) + ")";
    std::string cause = likely_cause(err, call);
    if (!cause.empty()) what += ". " + cause;
    throw system_error(err, what);
}

void throw_errno(const char* call, std::string_view object) { throw_errno(errno, call, object); }

}  // namespace mp::sys
