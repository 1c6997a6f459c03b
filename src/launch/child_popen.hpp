// launch/child_popen.hpp — a child of this very process (fork, spawn): its
// sentinel is a pidfd, its exit code comes from waitpid.
#pragma once

#include "launch/launch.hpp"

namespace mp::detail::launch {

class child_popen final : public popen {
public:
    /// Made before the child exists, so that nothing can fail between the
    /// child's start and attach().
    child_popen() = default;

    void attach(int pid, unique_fd pidfd) noexcept {
        pid_ = pid;
        pidfd_ = std::move(pidfd);
    }

    [[nodiscard]] int sentinel() const noexcept override { return pidfd_.get(); }

    std::optional<int> poll() override {
        if (!exit_code_) exit_code_ = sys::try_reap(pid_);
        return exit_code_;
    }

    std::optional<int> wait(deadline until) override {
        if (exit_code_) return exit_code_;
        if (!sys::wait_readable(pidfd_.get(), until)) return std::nullopt;
        exit_code_ = sys::reap(pid_);
        return exit_code_;
    }

private:
    unique_fd pidfd_;
};

}  // namespace mp::detail::launch
