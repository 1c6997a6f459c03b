// leak_check_test.cpp — the leak check itself sees what it must see.
#include "support/leak_check.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

namespace {

bool mentions(const std::vector<std::string>& leaks, const std::string& what) {
    for (auto& l : leaks)
        if (l.find(what) != std::string::npos) return true;
    return false;
}

TEST(LeakCheck, SeesANewFileDescriptorAndForgetsItOnceClosed) {
    auto before = mp_test::snapshot::take();
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    auto leaks = mp_test::leaks_between(before, mp_test::snapshot::take());
    EXPECT_TRUE(mentions(leaks, "file descriptor " + std::to_string(fd) + " -> /dev/null"))
        << ::testing::PrintToString(leaks);
    ::close(fd);
    EXPECT_TRUE(mp_test::leaks_between(before, mp_test::snapshot::take()).empty());
}

TEST(LeakCheck, SeesARunningChildThenAZombieThenNothing) {
    auto before = mp_test::snapshot::take();
    int gate[2];
    ASSERT_EQ(::pipe2(gate, O_CLOEXEC), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::close(gate[1]);
        char c;
        (void)!::read(gate[0], &c, 1);
        ::_exit(0);
    }
    ::close(gate[0]);
    auto leaks = mp_test::leaks_between(before, mp_test::snapshot::take());
    EXPECT_TRUE(mentions(leaks, "process " + std::to_string(pid))) << ::testing::PrintToString(leaks);
    ::close(gate[1]);  // the child reads EOF and exits, unreaped
    std::vector<std::string> zombie;
    for (int i = 0; i < 200 && !mentions(zombie, "zombie process " + std::to_string(pid)); ++i) {
        ::usleep(10000);
        zombie = mp_test::leaks_between(before, mp_test::snapshot::take());
    }
    EXPECT_TRUE(mentions(zombie, "zombie process " + std::to_string(pid))) << ::testing::PrintToString(zombie);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(mp_test::wait_for_no_leaks(before, 1000).empty());
}

TEST(LeakCheck, SeesAnMpSharedMemoryNameAndForgetsItOnceUnlinked) {
    auto before = mp_test::snapshot::take();
    std::string name = "mp-leakcheck-" + std::to_string(::getpid());
    int fd = ::open(("/dev/shm/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ::close(fd);
    auto leaks = mp_test::leaks_between(before, mp_test::snapshot::take());
    EXPECT_TRUE(mentions(leaks, "/dev/shm/" + name)) << ::testing::PrintToString(leaks);
    ::unlink(("/dev/shm/" + name).c_str());
    EXPECT_TRUE(mp_test::leaks_between(before, mp_test::snapshot::take()).empty());
}

TEST(LeakCheck, IgnoresAnotherLiveProgramsSharedMemory) {
    auto before = mp_test::snapshot::take();
    // pid 1 is alive and is not this process or one of its children.
    std::string name = "mp-1-leakcheck-other";
    int fd = ::open(("/dev/shm/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ::close(fd);
    auto leaks = mp_test::leaks_between(before, mp_test::snapshot::take());
    ::unlink(("/dev/shm/" + name).c_str());
    EXPECT_FALSE(mentions(leaks, name)) << ::testing::PrintToString(leaks);
}

}  // namespace
