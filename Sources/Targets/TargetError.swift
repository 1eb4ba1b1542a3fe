import ELF

/// Everything that can go wrong talking to a target. Each message names the target, the operation,
/// the address and what was expected and found.
public enum TargetError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A target specification that does not parse (`gdb:host` without a port, `pid:abc`, …).
    case invalidSpec(text: String, reason: String)
    /// A system call failed (`open /dev/kmem: Permission denied`).
    case systemCall(target: String, operation: String, call: String, errno: Int32)
    /// No part of the target backs this address (no PT_LOAD segment, no mapping, outside RAM).
    case unmappedAddress(target: String, address: UInt64, count: Int, detail: String)
    /// The target transferred fewer bytes than asked.
    case shortTransfer(target: String, operation: String, address: UInt64, expected: Int, transferred: Int)
    /// This backend cannot do that (stop /dev/mem, write /proc/kcore).
    case notSupported(target: String, operation: String, reason: String)
    /// The GDB stub sent something the protocol does not allow here.
    case protocolViolation(target: String, context: String, expected: String, found: String)
    /// The GDB stub answered a request with an error (`E14`).
    case remoteError(target: String, request: String, reply: String)
    /// Could not connect (refused, unreachable, bad host).
    case connectionFailed(target: String, detail: String)
    /// The peer closed the connection.
    case connectionClosed(target: String, during: String)
    /// Nothing came back in time.
    case timeout(target: String, waitingFor: String, seconds: Double)
    /// ptrace refused: not ours to trace.
    case permissionDenied(pid: Int32, detail: String)
    /// No process with this pid.
    case noSuchProcess(pid: Int32)
    /// The process exited (or was killed) while Suture worked on it.
    case processExited(pid: Int32, detail: String)
    /// Another tracer (a debugger, gdbserver, another Suture) already holds the process.
    case alreadyTraced(pid: Int32, tracer: Int32)
    /// The operation needs the target stopped and it is not (or it was auto-resumed).
    case notStopped(target: String, operation: String)
    /// `stop()` was called while already stopped (nesting is not supported).
    case alreadyStopped(target: String)
    /// The watchdog resumed a stop held longer than its limit; the operation must start over.
    case watchdogResumed(target: String, seconds: Double)
    /// An ELF structure (kcore, core file, executable) is not what it must be.
    case malformedELF(file: String, structure: String, offset: UInt64, expected: String, found: String)
    /// The ELF module could not read a file (its error names the file, structure and offset).
    case elf(ELFError)
    /// A kernel symbol needed for this operation is not known.
    case missingSymbol(target: String, name: String, purpose: String)
    /// Signal guard problems (already installed, pipe creation failed).
    case signalGuard(detail: String)
    /// A CPU or task was executing inside a range a compare-and-swap backend was asked to write:
    /// nothing was written (the module's stack check, like Ksplice's CODE_BUSY).
    case busy(target: String, address: UInt64, detail: String)

    public var description: String {
        switch self {
        case let .invalidSpec(text, reason):
            return "invalid target '\(text)': \(reason) (expected gdb:HOST:PORT, pid:N, kmem[:PATH], mem[:PATH], kcore[:PATH], file:PATH, lab or local)"
        case let .systemCall(target, operation, call, code):
            return "\(target): \(operation): \(call) failed: \(SystemCallError.message(code)) (errno \(code))"
        case let .unmappedAddress(target, address, count, detail):
            return "\(target): \(count) byte(s) at \(Hex.address(address)) are not backed by the target: \(detail)"
        case let .shortTransfer(target, operation, address, expected, transferred):
            return "\(target): \(operation) at \(Hex.address(address)): expected \(expected) byte(s), transferred \(transferred)"
        case let .notSupported(target, operation, reason):
            return "\(target): \(operation) is not supported: \(reason)"
        case let .protocolViolation(target, context, expected, found):
            return "\(target): GDB remote protocol, \(context): expected \(expected), found \(found)"
        case let .remoteError(target, request, reply):
            return "\(target): the stub answered '\(request)' with '\(reply)'"
        case let .connectionFailed(target, detail):
            return "\(target): cannot connect: \(detail)"
        case let .connectionClosed(target, during):
            return "\(target): the connection closed during \(during)"
        case let .timeout(target, waitingFor, seconds):
            return "\(target): no answer after \(seconds) s waiting for \(waitingFor)"
        case let .permissionDenied(pid, detail):
            return "pid:\(pid): not permitted to trace: \(detail)"
        case let .noSuchProcess(pid):
            return "pid:\(pid): no such process"
        case let .processExited(pid, detail):
            return "pid:\(pid): the process exited: \(detail)"
        case let .alreadyTraced(pid, tracer):
            return "pid:\(pid): already traced by pid \(tracer) (a debugger, gdbserver or another Suture); detach it first"
        case let .notStopped(target, operation):
            return "\(target): \(operation) needs the target stopped, and it is running"
        case let .alreadyStopped(target):
            return "\(target): already stopped (nested stop() is not supported)"
        case let .watchdogResumed(target, seconds):
            return "\(target): the watchdog resumed the target after a stop held over \(seconds) s; start the operation again"
        case let .malformedELF(file, structure, offset, expected, found):
            return "\(file): \(structure) at offset \(Hex.address(offset)): expected \(expected), found \(found)"
        case let .elf(error):
            return error.description
        case let .missingSymbol(target, name, purpose):
            return "\(target): symbol '\(name)' is not known (needed for \(purpose))"
        case let .signalGuard(detail):
            return "signal guard: \(detail)"
        case let .busy(target, address, detail):
            return "\(target): busy at 0x\(String(address, radix: 16)), nothing written: \(detail)"
        }
    }

    static func system(_ target: String, _ operation: String, _ error: SystemCallError) -> TargetError {
        .systemCall(target: target, operation: operation, call: error.call, errno: error.code)
    }
}
