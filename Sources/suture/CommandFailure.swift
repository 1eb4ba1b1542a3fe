import ArgumentParser
import Foundation
import Patching

/// Exit codes every command keeps: 0 done, 1 error, 2 usage (ArgumentParser's), 3 refused by preflight.
enum ExitStatus {
    static let error: Int32 = 1
    static let refused: Int32 = 3
}

/// A failure of a command itself (library errors carry their own messages).
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Prints `error` to stderr prefixed with the command's name and exits with the matching status.
func fail(_ command: String, _ error: Error) -> ExitCode {
    if let exit = error as? ExitCode { return exit }
    writeError("suture \(command): \(error)")
    if case PatchError.refused = error { return ExitCode(ExitStatus.refused) }
    return ExitCode(ExitStatus.error)
}

func writeError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Runs `body`, turning any thrown error into a printed message and an exit code.
func running(_ command: String, _ body: () throws -> Void) throws {
    do { try body() } catch { throw fail(command, error) }
}
