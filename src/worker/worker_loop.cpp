// The worker loop: receive a task, run its entry, send its result. Knows
// nothing of how bytes move or how the worker was started.
#include <exception>
#include <string>

#include "log.hpp"
#include "mp/context.hpp"
#include "worker/protocol.hpp"

namespace mp::detail::worker {
namespace {

struct send_context {
    worker_channel* channel;
    output_archive* out;
    bool sent = false;
};

void send_result(void* context) {
    auto* c = static_cast<send_context*>(context);
    c->channel->send(*c->out);
    c->sent = true;
}

void send_failure(worker_channel& channel, const received_task& task, std::exception_ptr e) {
    output_archive err;
    write_result_header(err, task.id, task.claim, result_status::failed);
    err(capture_exception(std::move(e)));
    channel.send(err);
}

}  // namespace

exception_record initializer_failure(std::exception_ptr e) {
    exception_record r = capture_exception(std::move(e));
    std::string name = mp::current_process().name();
    detail::log(log_level::error, "mp: the initializer of pool worker " + name + " threw " + r.type_name + ": " +
                                      r.what + "; the tasks this worker takes fail with that error");
    r.what = "mp: this task did not run: the initializer of worker " + name + " threw (" + r.what +
             "), so its tasks fail; fix the initializer or catch its errors";
    return r;
}

void run_worker_loop(worker_channel& channel, int max_tasks, const exception_record* init_failure) {
    received_task task;
    std::vector<std::byte> buffer;  // reused from task to task
    for (int done = 0; max_tasks <= 0 || done < max_tasks; ++done) {
        if (!channel.receive(task)) return;
        if (init_failure) {
            output_archive err;
            write_result_header(err, task.id, task.claim, result_status::failed);
            err(*init_failure);
            channel.send(err);
            channel.finished();
            continue;
        }
        output_archive out(std::move(buffer));
        write_result_header(out, task.id, task.claim, result_status::ok);
        send_context ctx{&channel, &out};
        try {
            input_archive in(task.body);
            code_ref ref;
            in(ref);
            auto entry = resolve_as<task_entry>(ref);
            task_result_sink sink{out, &send_result, &ctx};
            entry(in, sink);
            if (!ctx.sent) throw serialization_error("mp: a task's entry returned without sending its result");
        } catch (...) {
            if (!ctx.sent) send_failure(channel, task, std::current_exception());
        }
        channel.finished();
        buffer = out.take_buffer();
    }
}

}  // namespace mp::detail::worker
