/// The build's tools throw `KernelBuildError`: `toolMissing` and `io` are its own cases.
extension KernelBuildError: HostToolFailure {
    /// make's output runs to thousands of lines: the message keeps the end, where make stops, and
    /// names the log that has the rest.
    package static func toolFailed(command: String, log: String?, result: HostTool.Result) -> KernelBuildError {
        .commandFailed(command: command, status: result.status, log: log, output: result.tail())
    }

    package static func toolInterrupted(command: String) -> KernelBuildError {
        .interrupted(command: command)
    }
}
