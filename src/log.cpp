// log.cpp — mp::set_log_handler and the default handler (standard error).
#include "log.hpp"

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

namespace mp {

namespace {

// The current handler; null means the default. Read with one atomic load per
// message, so a handler is called outside any lock and may be replaced while
// another thread is still inside the old one (the shared_ptr keeps it alive).
std::atomic<std::shared_ptr<const log_handler>>& current_handler() {
    static std::atomic<std::shared_ptr<const log_handler>> handler;
    return handler;
}

void write_to_stderr(std::string_view message) noexcept {
    // One fwrite per line, so lines from several threads do not interleave.
    std::string line;
    try {
        line.reserve(message.size() + 1);
        line.append(message);
        line.push_back('\n');
        std::fwrite(line.data(), 1, line.size(), stderr);
    } catch (...) {
        std::fwrite(message.data(), 1, message.size(), stderr);
        std::fputc('\n', stderr);
    }
    std::fflush(stderr);
}

}  // namespace

std::string_view to_string(log_level level) noexcept {
    switch (level) {
        case log_level::debug: return "debug";
        case log_level::info: return "info";
        case log_level::warning: return "warning";
        case log_level::error: return "error";
    }
    return "unknown";
}

log_handler set_log_handler(log_handler handler) {
    std::shared_ptr<const log_handler> next;
    if (handler) next = std::make_shared<const log_handler>(std::move(handler));
    auto previous = current_handler().exchange(std::move(next));
    return previous ? *previous : log_handler{};
}

namespace detail {

void log(log_level level, std::string_view message) noexcept {
    std::shared_ptr<const log_handler> handler;
    try {
        handler = current_handler().load();
    } catch (...) {
    }
    if (handler) {
        try {
            (*handler)(level, message);
            return;
        } catch (...) {
            // A handler that throws must not take mp down with it; the message
            // still reaches someone.
        }
    }
    write_to_stderr(message);
}

}  // namespace detail

}  // namespace mp
