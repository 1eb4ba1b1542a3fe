#if canImport(Glibc)
import Glibc
#endif

/// An error type `HostTool` can throw: a missing program names the package that provides it, a
/// failed one carries its command line, status and output.
package protocol HostToolFailure: IOFailure {
    /// `tool` is not in PATH; `package` is the Debian package to install.
    static func toolMissing(tool: String, package: String) -> Self
    /// `command` exited with a non-zero status, or could not start (status -1, the output says
    /// why). `log` is the file that holds the whole output, when the caller asked for one.
    static func toolFailed(command: String, log: String?, result: HostTool.Result) -> Self
    /// An interrupt (`BuildInterruption`) stopped `command`.
    static func toolInterrupted(command: String) -> Self
}

extension HostToolFailure {
    /// For error types whose callers never interrupt: reported as a failure by SIGINT.
    package static func toolInterrupted(command: String) -> Self {
        toolFailed(command: command, log: nil,
                   result: HostTool.Result(status: 128 + SIGINT, stdout: "", stderr: "interrupted"))
    }
}
