import ArgumentParser
import Foundation
import ELF
import Patching

/// `suture ps`: the processes Suture patched, from the journal, checked against their live bytes.
struct PsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps",
        abstract: "List processes with Suture patches (from the journal), checked against live memory.",
        discussion: """
            One line per patch on a pid:N target that the journal shows applied (or half done): \
            PID, LIVE (applied, reverted, drifted, exited, unreadable), JOURNAL (what the journal says), \
            the patch id, the executable and the patch's description. A pid now held by a process \
            started after the patch, or running another build, counts as exited. \
            Exit status 0, or 1 when the journal cannot be read.
            """)

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("The journal's folder (default $SUTURE_STATE_DIR or /var/lib/suture).", valueName: "dir"))
    var stateDirectory: String?

    @Flag(name: .long, help: "Also list patches the journal shows reverted.")
    var all = false

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    func run() throws {
        try running("ps") {
            let journal = Journal(directory: stateDirectory ?? Journal.defaultDirectory())
            let entries = try ProcessPatchList.list(journal: journal, includeReverted: all)
            if json {
                let rows: [[String: String]] = entries.map {
                    ["pid": String($0.pid), "live": $0.live.description, "journal": $0.patch.state.rawValue, "id": $0.patch.id,
                     "executable": $0.executable ?? "", "description": $0.patch.description ?? "", "detail": $0.detail]
                }
                let data = try JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            if entries.isEmpty {
                print("no processes with Suture patches in \(journal.logPath)")
                return
            }
            var table = [["PID", "LIVE", "JOURNAL", "PATCH", "EXECUTABLE", "DESCRIPTION"]]
            for e in entries {
                var description = e.patch.description ?? ""
                if case let .exited(detail) = e.live { description += (description.isEmpty ? "" : "; ") + detail }
                if case let .unreadable(detail) = e.live { description += (description.isEmpty ? "" : "; ") + detail }
                table.append([String(e.pid), e.live.description, e.patch.state.rawValue, e.patch.id, e.executable ?? "-", description])
            }
            var widths = [Int](repeating: 0, count: 6)
            for row in table { for (k, cell) in row.enumerated() { widths[k] = max(widths[k], cell.count) } }
            for row in table {
                print(row.enumerated().map { k, cell in
                    k == row.count - 1 ? cell : cell.padding(toLength: widths[k], withPad: " ", startingAt: 0)
                }.joined(separator: "  "))
            }
        }
    }
}
