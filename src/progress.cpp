// progress.cpp — drawing mp::progress's bar on a terminal.
//
// The terminal itself (isatty, its width, writes) is reached through
// sys/terminal.hpp, like every system call of mp.
#include "mp/progress.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "sys/terminal.hpp"

namespace mp::detail {

namespace {

using clock = std::chrono::steady_clock;

/// Redraws at most this often: often enough to look alive, rarely enough
/// that drawing costs nothing next to the work and a slow terminal or an ssh
/// link is not flooded.
constexpr auto redraw_interval = std::chrono::milliseconds(100);

std::string clock_text(double seconds) {
    if (!(seconds >= 0) || seconds > 359999) return "--:--";
    auto s = static_cast<long>(seconds + 0.5);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    return buf;
}

std::string rate_text(double rate) {
    char buf[32];
    if (rate >= 100)
        std::snprintf(buf, sizeof buf, "%.0f/s", rate);
    else
        std::snprintf(buf, sizeof buf, "%.1f/s", rate);
    return buf;
}

}  // namespace

struct progress_bar::state {
    progress_options options;
    clock::time_point started;
    clock::time_point last_draw;
    bool started_drawing = false;
    bool finished = false;

    void draw(std::size_t done, bool final) noexcept {
        try {
            auto now = clock::now();
            last_draw = now;
            double elapsed = std::chrono::duration<double>(now - started).count();
            double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
            std::string head = options.desc.empty() ? std::string() : options.desc + ": ";
            std::string line;
            if (options.total) {
                std::size_t total = *options.total;
                double frac = total ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 1.0;
                std::string counts = std::to_string(done) + "/" + std::to_string(total);
                char pct[16];
                std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(frac * 100));
                std::string eta = done >= total ? "ETA 0:00"
                                  : rate > 0    ? "ETA " + clock_text(static_cast<double>(total - done) / rate)
                                                : "ETA --:--";
                std::string tail(" ");
                tail.append(pct).append(" ").append(rate_text(rate)).append(" ").append(eta);
                int room = sys::terminal_width(options.fd) - 1 -
                           static_cast<int>(head.size() + counts.size() + tail.size() + 3);
                int width = std::clamp(room, 0, 30);
                std::string bar;
                if (width >= 5) {
                    int filled = static_cast<int>(frac * width);
                    bar = " [" + std::string(static_cast<std::size_t>(filled), '#') +
                          std::string(static_cast<std::size_t>(width - filled), '-') + "]";
                }
                line = head + counts + bar + tail;
            } else {
                line = head + std::to_string(done) + " done, " + rate_text(rate) + ", " + clock_text(elapsed);
            }
            // \r: back to the start of the line; ESC[K: clear what a longer
            // previous line left behind.
            std::string out = "\r" + line + "\x1b[K";
            if (final) out += "\n";
            sys::write_best_effort(options.fd, out);
        } catch (...) {
            // Out of memory while formatting: skip this frame.
        }
    }
};

progress_bar::progress_bar(progress_options options) {
    if (!sys::is_terminal(options.fd)) return;  // not a terminal: draw nothing, ever
    s_ = std::make_unique<state>();
    s_->options = std::move(options);
    s_->started = s_->last_draw = clock::now();
}

progress_bar::~progress_bar() { finish(); }

void progress_bar::start() noexcept {
    if (!s_ || s_->started_drawing) return;
    s_->started_drawing = true;
    s_->started = clock::now();
    s_->draw(done_, false);
}

void progress_bar::maybe_draw() noexcept {
    if (s_->finished) return;
    if (clock::now() - s_->last_draw < redraw_interval) return;
    s_->draw(done_, false);
}

void progress_bar::finish() noexcept {
    if (!s_ || s_->finished || !s_->started_drawing) return;
    s_->finished = true;
    s_->draw(done_, true);
}

}  // namespace mp::detail
