// mp/error.hpp — the exceptions mp throws.
//
// Every exception mp throws derives from mp::error, so `catch (const mp::error&)`
// catches all of ours and nothing else. Each type names one situation a caller
// may want to handle on its own; what() says what happened and what to do.
//
// mp::error derives from std::system_error (and so from std::runtime_error and
// std::exception): that is what lets mp::system_error be both an mp::error and
// a std::system_error with a single std::exception inside it, so that
// `catch (const std::exception&)` still catches it. code() is the errno of a
// failed system call for mp::system_error, and a value of mp::errc in
// mp::error_category() for the others (`e.code() == mp::errc::timeout`).
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace mp {

/// The situations of mp's own exceptions, as error codes (mp::error::code()).
enum class errc {
    error = 1,       ///< mp::error itself
    bootstrap,       ///< mp::bootstrap_error
    serialization,   ///< mp::serialization_error
    timeout,         ///< mp::timeout_error (equivalent to std::errc::timed_out)
    queue_empty,     ///< mp::queue_empty
    queue_full,      ///< mp::queue_full
    eof,             ///< mp::eof_error
    closed,          ///< mp::closed_error
    process,         ///< mp::process_error
    value,           ///< mp::value_error
    broken_barrier,  ///< mp::broken_barrier_error
    worker_crashed,  ///< mp::worker_crashed
    cancelled,       ///< mp::cancelled_error (equivalent to std::errc::operation_canceled)
    authentication,  ///< mp::authentication_error
    not_exposed,     ///< mp::not_exposed_error
    remote,          ///< mp::remote_error
    lock,            ///< mp::lock_error
    mpi,             ///< mp::mpi_error
};

/// The category of mp::errc codes; its name() is "mp".
[[nodiscard]] const std::error_category& error_category() noexcept;

/// Makes `e.code() == mp::errc::timeout` work.
[[nodiscard]] inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

}  // namespace mp

namespace std {
/// Lets an mp::errc convert to a std::error_code.
template <>
struct is_error_code_enum<mp::errc> : true_type {};
}  // namespace std

namespace mp {

/// Base of every exception thrown by mp. what() is the message given to the
/// constructor, unchanged.
class error : public std::system_error {
public:
    /// An error with code mp::errc::error.
    explicit error(const std::string& what) : error(errc::error, what) {}

    [[nodiscard]] const char* what() const noexcept override { return message_.what(); }

protected:
    /// For the types below: their own code, and the message as what().
    error(std::error_code code, const std::string& what) : std::system_error(code), message_(what) {}

private:
    // std::runtime_error holds a reference-counted string, so copying an
    // exception cannot throw (std::string could).
    std::runtime_error message_;
};

/// A spawn or forkserver child was started but mp::init(argc, argv) was never
/// called, or was not the first thing main() did.
class bootstrap_error : public error {
public:
    explicit bootstrap_error(const std::string& what) : error(errc::bootstrap, what) {}
};

/// A value could not be serialized or deserialized: a message read as the
/// wrong type, a corrupt or truncated message, or a callable that cannot be
/// sent to a spawn/forkserver child.
class serialization_error : public error {
public:
    explicit serialization_error(const std::string& what) : error(errc::serialization, what) {}
};

/// A system call failed. code() is its errno in std::generic_category(), so
/// `e.code() == std::errc::no_space_on_device` works; what() names the call,
/// the object it acted on and, for the usual causes, what to do.
class system_error : public error {
public:
    /// `err` is the errno value; `what` the whole message.
    system_error(int err, const std::string& what) : error(std::error_code(err, std::generic_category()), what) {}
};

/// An operation did not complete before its timeout.
class timeout_error : public error {
public:
    explicit timeout_error(const std::string& what) : error(errc::timeout, what) {}
};

/// A timed or non-blocking get() found the queue empty.
class queue_empty : public error {
public:
    explicit queue_empty(const std::string& what) : error(errc::queue_empty, what) {}
};

/// A timed or non-blocking put() found the bounded queue full.
class queue_full : public error {
public:
    explicit queue_full(const std::string& what) : error(errc::queue_full, what) {}
};

/// The other end of a connection is gone: it closed, or its process died.
class eof_error : public error {
public:
    explicit eof_error(const std::string& what) : error(errc::eof, what) {}
};

/// An object was used after it was closed (a queue after close(), a pool
/// after close(), a connection after close()).
class closed_error : public error {
public:
    explicit closed_error(const std::string& what) : error(errc::closed, what) {}
};

/// A process object was misused: started twice, joined before start, ...
class process_error : public error {
public:
    explicit process_error(const std::string& what) : error(errc::process, what) {}
};

/// An argument was out of its allowed range (a semaphore released too many
/// times, task_done() called more often than put(), ...).
class value_error : public error {
public:
    explicit value_error(const std::string& what) : error(errc::value, what) {}
};

/// A lock was used in a way that cannot work: released by a thread that does
/// not hold it, re-acquired (blocking) by the thread holding a non-recursive
/// lock, or a condition waited on or notified without holding its lock.
class lock_error : public error {
public:
    explicit lock_error(const std::string& what) : error(errc::lock, what) {}
};

/// A failure of the MPI layer (mp::mpi_pool_executor): MPI could not start, a
/// spawn failed, a rank runs a different build of the program.
class mpi_error : public error {
public:
    explicit mpi_error(const std::string& what) : error(errc::mpi, what) {}
};

/// A barrier was broken (a waiter timed out, abort() was called, or a party
/// died while waiting).
class broken_barrier_error : public error {
public:
    explicit broken_barrier_error(const std::string& what) : error(errc::broken_barrier, what) {}
};

/// The process running a task died (killed by a signal, crashed, or exited)
/// before the task finished. Only that task fails.
class worker_crashed : public error {
public:
    explicit worker_crashed(const std::string& what) : error(errc::worker_crashed, what) {}
};

/// A future was cancelled before it ran.
class cancelled_error : public error {
public:
    explicit cancelled_error(const std::string& what) : error(errc::cancelled, what) {}
};

/// A manager connection failed the HMAC challenge: the two sides do not share
/// the same authkey.
class authentication_error : public error {
public:
    explicit authentication_error(const std::string& what) : error(errc::authentication, what) {}
};

/// A proxy called a method that its manager does not expose.
class not_exposed_error : public error {
public:
    explicit not_exposed_error(const std::string& what) : error(errc::not_exposed, what) {}
};

/// An exception of a type that was not registered with
/// mp::register_exception<E>() was thrown in another process. It keeps the
/// original type's name, its what(), and the remote stack trace when known.
class remote_error : public error {
public:
    remote_error(std::string type_name, std::string message, std::string remote_trace = {})
        : error(errc::remote, type_name + ": " + message),
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
