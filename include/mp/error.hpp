// mp/error.hpp — the exceptions mp throws.
//
// Every exception mp throws derives from mp::error, so `catch (const mp::error&)`
// catches all of ours and nothing else. Each type names one situation a caller
// may want to handle on its own; what() says what happened and what to do.
#pragma once

#include <stdexcept>
#include <string>

namespace mp {

/// Base of every exception thrown by mp.
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A spawn or forkserver child was started but mp::init(argc, argv) was never
/// called, or was not the first thing main() did.
class bootstrap_error : public error {
public:
    using error::error;
};

/// A value could not be serialized or deserialized: a message read as the
/// wrong type, a corrupt or truncated message, or a callable that cannot be
/// sent to a spawn/forkserver child.
class serialization_error : public error {
public:
    using error::error;
};

/// A system call failed. code() is the errno value.
class system_error : public error {
public:
    system_error(int code, const std::string& what) : error(what), code_(code) {}
    [[nodiscard]] int code() const noexcept { return code_; }

private:
    int code_;
};

/// An operation did not complete before its timeout.
class timeout_error : public error {
public:
    using error::error;
};

/// A timed or non-blocking get() found the queue empty.
class queue_empty : public error {
public:
    using error::error;
};

/// A timed or non-blocking put() found the bounded queue full.
class queue_full : public error {
public:
    using error::error;
};

/// The other end of a connection is gone: it closed, or its process died.
class eof_error : public error {
public:
    using error::error;
};

/// An object was used after it was closed (a queue after close(), a pool
/// after close(), a connection after close()).
class closed_error : public error {
public:
    using error::error;
};

/// A process object was misused: started twice, joined before start, ...
class process_error : public error {
public:
    using error::error;
};

/// An argument was out of its allowed range (a semaphore released too many
/// times, task_done() called more often than put(), ...).
class value_error : public error {
public:
    using error::error;
};

/// A barrier was broken (a waiter timed out, abort() was called, or a party
/// died while waiting).
class broken_barrier_error : public error {
public:
    using error::error;
};

/// The process running a task died (killed by a signal, crashed, or exited)
/// before the task finished. Only that task fails.
class worker_crashed : public error {
public:
    using error::error;
};

/// A future was cancelled before it ran.
class cancelled_error : public error {
public:
    using error::error;
};

/// A manager connection failed the HMAC challenge: the two sides do not share
/// the same authkey.
class authentication_error : public error {
public:
    using error::error;
};

/// A proxy called a method that its manager does not expose.
class not_exposed_error : public error {
public:
    using error::error;
};

/// An exception of a type that was not registered with
/// mp::register_exception<E>() was thrown in another process. It keeps the
/// original type's name, its what(), and the remote stack trace when known.
class remote_error : public error {
public:
    remote_error(std::string type_name, std::string message, std::string remote_trace = {})
        : error(type_name + ": " + message),
          type_name_(std::move(type_name)),
          message_(std::move(message)),
          remote_trace_(std::move(remote_trace)) {}

    /// The demangled name of the exception's type in the other process.
    [[nodiscard]] const std::string& type_name() const noexcept { return type_name_; }
    /// The original what().
    [[nodiscard]] const std::string& message() const noexcept { return message_; }
    /// Where the exception came from in the other process, if known.
    [[nodiscard]] const std::string& remote_trace() const noexcept { return remote_trace_; }

private:
    std::string type_name_;
    std::string message_;
    std::string remote_trace_;
};

}  // namespace mp
