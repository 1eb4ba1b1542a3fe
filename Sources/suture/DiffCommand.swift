import ArgumentParser
import Foundation
import ELF
import Patching

/// `suture diff ORIG PATCHED`: what changed between two builds, function by function, and the
/// bundle that makes it in place.
struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Compare two builds (.o, .ko, executables, shared libraries) and make a patch bundle.",
        discussion: """
            Functions are paired by name and compared relocation-aware: code that merely moved is \
            equal; changed instructions are listed, and string literals are compared by content. \
            Same-length code changes become hunks (whole instructions, with masks of the bytes the \
            kernel rewrites at load); same-length string changes in a .ko become hunks reached \
            through the code that uses them. Anything else is reported with its reason. \
            Exit status: 0 when the report (and bundle, with -o) was made; 1 when -o was asked and \
            the difference cannot be made in place (or there is none); 2 on errors.
            """)

    @Argument(help: ArgumentHelp("The original build.", valueName: "orig"))
    var original: String

    @Argument(help: ArgumentHelp("The patched build.", valueName: "patched"))
    var patched: String

    @Option(name: [.short, .customLong("output")], help: ArgumentHelp("Write the bundle here.", valueName: "bundle"))
    var output: String?

    @Option(name: .long, help: ArgumentHelp("The module a .o belongs to (a .ko names itself).", valueName: "name"))
    var module: String?

    @Option(name: .customLong("linked-module"), help: ArgumentHelp(
        "For a .o of a module: the module's linked .ko as it runs, which decides whether a changed string literal "
        + "is shared with other code (the linker may merge equal strings of several objects).", valueName: "ko"))
    var linkedModule: String?

    @Flag(name: .long, help: "Show changed instructions as -/+ lines (the default).")
    var unified = false

    @Flag(name: .customLong("side-by-side"), help: "Show changed instructions in two columns.")
    var sideBySide = false

    @Option(name: .long, help: ArgumentHelp("Line width for --side-by-side.", valueName: "columns"))
    var width: Int?

    @Flag(name: .long, help: "Print the report as JSON.")
    var json = false

    func validate() throws {
        guard !(unified && sideBySide) else { throw ValidationError("give --unified or --side-by-side, not both") }
        if let width, width < 40 { throw ValidationError("--width must be at least 40") }
    }

    func run() throws {
        let diff: ObjectDiff
        do {
            diff = try ObjectDiff(original: try ELFFile(path: original), patched: try ELFFile(path: patched),
                                  options: .init(module: module, linkedModule: try linkedModule.map { try ELFFile(path: $0) }))
        } catch {
            FileHandle.standardError.write(Data("suture diff: \(error)\n".utf8))
            throw ExitCode(2)
        }

        if json {
            FileHandle.standardOutput.write(diff.jsonReport())
            FileHandle.standardOutput.write(Data("\n".utf8))
        } else {
            let terminal = isatty(STDOUT_FILENO) == 1
            let columns = width ?? Self.terminalWidth() ?? 160
            let style: ObjectDiffStyle = sideBySide ? .sideBySide(width: columns) : .unified
            FileHandle.standardOutput.write(Data(diff.render(style: style, color: terminal).utf8))
        }

        guard let output else { return }
        do {
            let bundle = try diff.bundle()
            try bundle.save(path: output)
            FileHandle.standardError.write(Data("suture diff: wrote \(output) (\(bundle.id), \(bundle.hunks.count) hunk\(bundle.hunks.count == 1 ? "" : "s"))\n".utf8))
        } catch let error as ObjectDiffError {
            FileHandle.standardError.write(Data("suture diff: no bundle: \(error)\n".utf8))
            throw ExitCode(1)
        } catch {
            FileHandle.standardError.write(Data("suture diff: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    private static func terminalWidth() -> Int? {
        guard isatty(STDOUT_FILENO) == 1 else { return nil }
        var size = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return nil }
        return Int(size.ws_col)
    }
}
