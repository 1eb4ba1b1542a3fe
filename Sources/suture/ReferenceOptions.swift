import ArgumentParser
import Foundation
import Symbols
import Patching
import Lab

/// `--object FILE` for commands that compose a patch by hand (flip, poke): the file the function's
/// code came from, so that preflight compares the whole live function with it, not only the hunk.
struct ReferenceOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "The object the function's code came from (.ko, .o, an ELF with symbols, or the kernel's vmlinux/vmlinuz): preflight then checks the whole "
        + "live function against it, outside relocations and run-time rewrite tables. On the lab, module functions "
        + "default to their .ko from the cached kernel package.", valueName: "file"))
    var object: String?

    /// The reference for the function at `place`: `--object`, else on the lab a module function's
    /// `.ko` from the cached kernel package, else none (built-in kernel code: the package's vmlinuz
    /// is stripped, so it is used only when given).
    func reference(for place: ResolvedAddress, session: TargetSession) throws -> ReferenceObject? {
        if let object { return try ReferenceObject.open(path: object, liveSymbols: place.symbol?.module == nil ? session.symbols : nil) }
        guard session.name == "lab", let module = place.symbol?.module else { return nil }
        guard let path = ShippedModules().path(ofModule: module) else {
            writeError("note: no \(module).ko in the cached kernel package; checking the hunk's bytes only")
            return nil
        }
        return try ReferenceObject(path: path)
    }
}
