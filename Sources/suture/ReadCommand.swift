import ArgumentParser
import Foundation
import ELF
import Symbols

/// `suture read -t T EXPR LEN`: a hex dump of live memory, reading only the bytes asked for.
struct ReadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read", abstract: "Hex-dump live memory at an address expression.")

    @OptionGroup var targetOptions: TargetOptions

    @Argument(help: ArgumentHelp("Where: 0xffffffff81000000, nfs_flock+0x2f, \"nfs_flock [nfs]\".", valueName: "expr"))
    var expression: String

    @Argument(help: ArgumentHelp("How many bytes (decimal or 0x hex).", valueName: "length"))
    var length: String = "64"

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    func run() throws {
        try running("read") {
            guard let count = Hex.parseNumber(length), count > 0, count <= 1 << 24 else {
                throw ValidationError("length must be a number from 1 to 16 MiB, got \(length)")
            }
            let session = try targetOptions.open(access: .read)
            let place = try session.resolve(expression)
            let bytes = try session.target.read(at: place.address, count: Int(count))
            if json {
                let object: [String: String] = ["address": Hex.address(place.address), "location": place.location,
                                                "bytes": Hex.bytes(bytes)]
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            print("\(place):")
            print(HexDump.render(bytes, address: place.address), terminator: "")
        }
    }
}

/// `xxd`-like lines: 16 bytes each, address, hex, printable ASCII.
enum HexDump {
    static func render(_ bytes: [UInt8], address: UInt64) -> String {
        var out = ""
        var offset = 0
        while offset < bytes.count {
            let line = bytes[offset..<min(offset + 16, bytes.count)]
            let hex = Hex.bytes(line)
            let ascii = String(line.map { (0x20..<0x7f).contains($0) ? Character(Unicode.Scalar($0)) : "." })
            out += Hex.padded(address + UInt64(offset)) + "  " + hex.padding(toLength: 47, withPad: " ", startingAt: 0) + "  " + ascii + "\n"
            offset += 16
        }
        return out
    }
}
