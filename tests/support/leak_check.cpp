// leak_check.cpp — see leak_check.hpp.
#include "support/leak_check.hpp"

#include <dirent.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "runtime.hpp"  // mp::detail::helper_pids()

namespace mp_test {
namespace {

std::mutex allowed_mutex;
std::set<std::pair<int, std::string>> allowed_fds;  // guarded by allowed_mutex

std::optional<std::string> read_link(const std::string& path) {
    char buf[4096];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<std::size_t>(n));
}

bool all_digits(const char* s) {
    if (!*s) return false;
    for (; *s; ++s)
        if (!std::isdigit(static_cast<unsigned char>(*s))) return false;
    return true;
}

/// Names of a directory's entries, "." and ".." left out; empty if it cannot be read.
template <class F>
void for_each_entry(const char* dir, F&& f) {
    DIR* d = ::opendir(dir);
    if (!d) return;
    int own = ::dirfd(d);
    while (dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
        f(e->d_name, own);
    }
    ::closedir(d);
}

}  // namespace

/// Parses /proc/<pid>/stat. The command name sits in parentheses and may itself
/// contain spaces and parentheses, so fields are counted from the last ')'.
std::optional<proc_entry> read_stat(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(in, line)) return std::nullopt;
    auto open = line.find('(');
    auto close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
    proc_entry e;
    e.pid = pid;
    e.comm = line.substr(open + 1, close - open - 1);
    std::istringstream rest(line.substr(close + 1));
    // Fields after comm: 3 state, 4 ppid, ..., 22 starttime.
    std::string field;
    std::vector<std::string> fields;
    while (rest >> field && fields.size() < 20) fields.push_back(field);
    if (fields.size() < 20) return std::nullopt;
    e.state = fields[0].empty() ? '?' : fields[0][0];
    e.ppid = std::atoi(fields[1].c_str());
    e.start = std::strtoull(fields[19].c_str(), nullptr, 10);
    return e;
}

std::vector<proc_entry> all_processes() {
    std::vector<proc_entry> out;
    for_each_entry("/proc", [&](const char* name, int) {
        if (!all_digits(name)) return;
        if (auto e = read_stat(std::atoi(name))) out.push_back(*e);
    });
    return out;
}

namespace {

/// The inode of a "pipe:[N]" or "socket:[N]" link target, or 0.
unsigned long inode_of(const std::string& target) {
    for (const char* kind : {"pipe:[", "socket:["}) {
        auto len = std::strlen(kind);
        if (target.compare(0, len, kind) == 0) return std::strtoul(target.c_str() + len, nullptr, 10);
    }
    return 0;
}

/// Inodes of every pipe and socket open in process `pid`.
void add_inodes_of(int pid, std::unordered_set<unsigned long>& out) {
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    for_each_entry(dir.c_str(), [&](const char* name, int) {
        if (auto t = read_link(dir + "/" + name))
            if (auto ino = inode_of(*t)) out.insert(ino);
    });
}

/// Unix socket inode -> its peer's inode, from the kernel's sock_diag
/// interface (what `ss -x` shows). Empty if the interface is unavailable.
std::unordered_map<unsigned long, unsigned long> unix_socket_peers() {
    std::unordered_map<unsigned long, unsigned long> peers;
    int nl = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) return peers;
    struct {
        nlmsghdr nlh;
        unix_diag_req req;
    } request{};
    request.nlh.nlmsg_len = sizeof request;
    request.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    request.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    request.req.sdiag_family = AF_UNIX;
    request.req.udiag_states = ~0u;
    request.req.udiag_show = UDIAG_SHOW_PEER;
    if (::send(nl, &request, sizeof request, 0) != static_cast<ssize_t>(sizeof request)) {
        ::close(nl);
        return peers;
    }
    alignas(nlmsghdr) char buf[32768];
    for (bool done = false; !done;) {
        ssize_t n = ::recv(nl, buf, sizeof buf, 0);
        if (n <= 0) break;
        int len = static_cast<int>(n);
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
                done = true;
                break;
            }
            auto* msg = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
            int attr_len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *msg));
            for (auto* a = reinterpret_cast<rtattr*>(msg + 1); RTA_OK(a, attr_len); a = RTA_NEXT(a, attr_len)) {
                if (a->rta_type == UNIX_DIAG_PEER) {
                    std::uint32_t peer;
                    std::memcpy(&peer, RTA_DATA(a), sizeof peer);
                    peers[msg->udiag_ino] = peer;
                }
            }
        }
    }
    ::close(nl);
    return peers;
}

/// The decimal numbers in `s` that stand alone, not glued to letters or other
/// digits: {123} in "mp-123-q7" ("q7" is not a number).
std::vector<long> standalone_numbers(const std::string& s) {
    std::vector<long> out;
    for (std::size_t i = 0; i < s.size();) {
        if (!std::isdigit(static_cast<unsigned char>(s[i]))) {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        bool left_ok = i == 0 || !std::isalnum(static_cast<unsigned char>(s[i - 1]));
        bool right_ok = j == s.size() || !std::isalnum(static_cast<unsigned char>(s[j]));
        if (left_ok && right_ok && j - i <= 9) out.push_back(std::atol(s.substr(i, j - i).c_str()));
        i = j;
    }
    return out;
}

bool looks_like_mp_shm(const std::string& name, int self) {
    if (name.rfind("mp-", 0) == 0 || name.rfind("sem.mp-", 0) == 0) return true;
    auto nums = standalone_numbers(name);
    return std::find(nums.begin(), nums.end(), self) != nums.end();
}

bool pid_alive(long pid) { return pid > 0 && ::access(("/proc/" + std::to_string(pid)).c_str(), F_OK) == 0; }

/// A new /dev/shm name belongs to another program's run (a test binary running
/// in parallel) when it carries the pid of a live process outside this one's
/// tree and not this one's own pid.
bool belongs_to_other_process(const std::string& name, const snapshot& now) {
    bool mine = false, theirs = false;
    for (long n : standalone_numbers(name)) {
        if (n == now.self_pid) {
            mine = true;
            continue;
        }
        bool in_tree = std::any_of(now.descendants.begin(), now.descendants.end(),
                                   [&](const proc_entry& e) { return e.pid == n; }) ||
                       std::find(now.helpers.begin(), now.helpers.end(), n) != now.helpers.end();
        if (in_tree)
            mine = true;
        else if (pid_alive(n))
            theirs = true;
    }
    return theirs && !mine;
}

std::string describe(const proc_entry& e) {
    std::ostringstream s;
    if (e.state == 'Z')
        s << "zombie process " << e.pid << " (" << e.comm << "), not reaped by its parent " << e.ppid;
    else
        s << "process " << e.pid << " (" << e.comm << ") still running, state " << e.state << ", parent "
          << e.ppid;
    return s.str();
}

bool check_enabled() {
    const char* v = std::getenv("MP_TEST_LEAK_CHECK");
    return !(v && std::strcmp(v, "0") == 0);
}

class leak_listener : public testing::EmptyTestEventListener {
public:
    void OnTestStart(const testing::TestInfo&) override {
        pid_ = ::getpid();
        before_ = snapshot::take();
    }

    // Listeners' OnTestEnd run in reverse order of registration, so this runs
    // before the default printer's and a failure added here is reported as
    // part of the test.
    void OnTestEnd(const testing::TestInfo&) override {
        // A forked child that returned into GoogleTest must not judge (or
        // report) its parent's test.
        if (::getpid() != pid_) return;
        auto leaks = wait_for_no_leaks(before_);
        if (leaks.empty()) return;
        std::ostringstream msg;
        msg << "the test leaked " << leaks.size() << " resource(s):";
        for (auto& l : leaks) msg << "\n  " << l;
        ADD_FAILURE() << msg.str();
    }

private:
    int pid_ = 0;
    snapshot before_;
};

}  // namespace

snapshot snapshot::take() {
    snapshot s;
    s.self_pid = ::getpid();
    s.helpers = mp::detail::helper_pids();

    // Descendants: everything reachable from this process through ppid links.
    auto procs = all_processes();
    std::unordered_map<int, std::vector<const proc_entry*>> children;
    for (auto& p : procs) children[p.ppid].push_back(&p);
    std::vector<int> frontier{s.self_pid};
    std::unordered_set<int> seen{s.self_pid};
    while (!frontier.empty()) {
        int parent = frontier.back();
        frontier.pop_back();
        for (const proc_entry* c : children[parent]) {
            if (!seen.insert(c->pid).second) continue;
            frontier.push_back(c->pid);
            bool helper = std::find(s.helpers.begin(), s.helpers.end(), c->pid) != s.helpers.end();
            if (!helper) s.descendants.push_back(*c);
        }
    }
    std::sort(s.descendants.begin(), s.descendants.end());

    for_each_entry("/proc/self/fd", [&](const char* name, int own) {
        int fd = std::atoi(name);
        if (fd == own) return;
        if (auto t = read_link(std::string("/proc/self/fd/") + name)) s.fds[fd] = *t;
    });

    for_each_entry("/dev/shm", [&](const char* name, int) {
        if (looks_like_mp_shm(name, s.self_pid)) s.shm_names.insert(name);
    });
    return s;
}

std::vector<std::string> leaks_between(const snapshot& before, const snapshot& after) {
    std::vector<std::string> out;

    for (const auto& p : after.descendants)
        if (!std::binary_search(before.descendants.begin(), before.descendants.end(), p))
            out.push_back(describe(p));

    std::vector<std::pair<int, std::string>> new_fds;
    {
        std::lock_guard<std::mutex> g(allowed_mutex);
        for (const auto& [fd, target] : after.fds) {
            auto it = before.fds.find(fd);
            if (it != before.fds.end() && it->second == target) continue;
            if (allowed_fds.count({fd, target})) continue;
            new_fds.emplace_back(fd, target);
        }
    }
    if (!new_fds.empty()) {
        // fds held to mp's helpers are theirs, not the test's: the same pipe or
        // socket open in a helper, or a unix socket whose peer is.
        std::unordered_set<unsigned long> helper_inodes;
        for (int h : after.helpers) add_inodes_of(h, helper_inodes);
        std::optional<std::unordered_map<unsigned long, unsigned long>> peers;
        for (const auto& [fd, target] : new_fds) {
            if (auto ino = inode_of(target); ino && !helper_inodes.empty()) {
                if (helper_inodes.count(ino)) continue;
                if (target.rfind("socket:", 0) == 0) {
                    if (!peers) peers = unix_socket_peers();
                    auto it = peers->find(ino);
                    if (it != peers->end() && helper_inodes.count(it->second)) continue;
                }
            }
            out.push_back("file descriptor " + std::to_string(fd) + " -> " + target + " left open");
        }
    }

    for (const auto& name : after.shm_names)
        if (!before.shm_names.count(name) && !belongs_to_other_process(name, after))
            out.push_back("/dev/shm/" + name + " not unlinked");
    return out;
}

std::vector<std::string> wait_for_no_leaks(const snapshot& before, int grace_ms) {
    using clock = std::chrono::steady_clock;
    auto deadline = clock::now() + std::chrono::milliseconds(grace_ms);
    for (;;) {
        auto leaks = leaks_between(before, snapshot::take());
        if (leaks.empty() || clock::now() >= deadline) return leaks;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

void install_leak_check() {
    if (!check_enabled()) return;
    testing::UnitTest::GetInstance()->listeners().Append(new leak_listener);
}

void allow_fd(int fd) {
    if (auto t = read_link("/proc/self/fd/" + std::to_string(fd))) {
        std::lock_guard<std::mutex> g(allowed_mutex);
        allowed_fds.emplace(fd, *t);
    }
}

}  // namespace mp_test
