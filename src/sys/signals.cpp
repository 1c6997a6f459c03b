#include "sys/signals.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "sys/sys.hpp"

namespace mp::sys {

void ignore_sigint() noexcept { ::signal(SIGINT, SIG_IGN); }

void reset_signals() noexcept {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s)
        if (s != SIGKILL && s != SIGSTOP) ::sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

unique_fd block_into_signalfd(int sig) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    if (::pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) throw_errno("pthread_sigmask");
    int fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0) throw_errno("signalfd");
    return unique_fd(fd);
}

void drain_signalfd(int fd) noexcept {
    signalfd_siginfo info;
    while (::read(fd, &info, sizeof info) == sizeof info) {
    }
}

}  // namespace mp::sys
