import Disassembly
import Foundation
import Testing
import TestSupport

/// `boundaries` is what the engine runs over whole live functions and sections: it must stay well
/// ahead of objdump on the same bytes.
@Suite("Throughput")
struct ThroughputTests {
    static func seconds(_ work: () throws -> Void) rethrows -> Double {
        let start = ContinuousClock.now
        try work()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    @Test("boundaries over vmlinux .text run at least 3× objdump -d")
    func againstObjdump() throws {
        let vmlinux = try Fixtures.debianVmlinux()
        let bytes = try Objdump.sectionBytes(vmlinux, section: ".text")
        let disassembler = try Disassembler(architecture: .x86_64)
        var count = 0
        var ours: [Double] = []
        for _ in 0..<3 {
            ours.append(Self.seconds {
                count = bytes.withUnsafeBytes { disassembler.boundaries($0, address: 0xffff_ffff_8100_0000).count }
            })
        }
        let objdump = try Self.seconds {
            let result = try Fixtures.run("sh", ["-c", "objdump -d -j .text '\(vmlinux.path)' > /dev/null"])
            try #require(result.status == 0, Comment(rawValue: result.stderr))
        }
        let median = ours.sorted()[1]
        let megabytes = Double(bytes.count) / 1e6
        print("vmlinux .text \(String(format: "%.1f", megabytes)) MB, \(count) instructions: boundaries "
              + "\(String(format: "%.2f", median)) s (\(String(format: "%.1f", megabytes / median)) MB/s), "
              + "objdump -d \(String(format: "%.2f", objdump)) s (\(String(format: "%.1f", megabytes / objdump)) MB/s), "
              + "ratio \(String(format: "%.1f", objdump / median))×")
        #expect(objdump / median >= 3)
    }
}
