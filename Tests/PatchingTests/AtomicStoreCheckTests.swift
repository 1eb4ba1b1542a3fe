import Testing
import Disassembly
@testable import Patching

/// Preflight's last check for targets that cannot be stopped: /dev/kmem and /dev/mem get one
/// naturally aligned store inside one instruction; a compare-and-swap target (the helper module)
/// gets up to its limit of bytes at any alignment, still inside one instruction, since it checks
/// only the written bytes for tasks inside them.
@Suite struct AtomicStoreCheckTests {
    /// `je +0x19f` (6 bytes, at an odd address) then `mov rdi, rax`: the sethostname site's shape.
    static let base: UInt64 = 0x1001
    static let code: [UInt8] = [0x0f, 0x84, 0x9f, 0x01, 0x00, 0x00, 0x48, 0x89, 0xc7]

    static func check(_ replacement: [UInt8], limit: Int) throws -> PreflightFinding {
        let instructions = try Disassembler(architecture: .x86_64).decode(code, address: base)
        #expect(instructions.map(\.size) == [6, 3])
        let hunk = ResolvedHunk(hunk: Hunk(symbol: nil, offset: 0, address: base, expected: code, replacement: replacement),
                                address: base, function: nil)
        return AtomicStoreCheck(hunks: [hunk], instructions: [instructions], isData: [false], compareAndSwapLimit: limit).run()
    }

    @Test func oneByteFlipPassesEverywhere() throws {
        let flip = [0x0f, 0x85] + Array(Self.code[2...])
        #expect(try Self.check(flip, limit: 0).passed)
        #expect(try Self.check(flip, limit: 16).passed)
    }

    @Test func wholeInstructionRewriteNeedsACompareAndSwap() throws {
        // je rel32 → jmp rel32; nop: six changed bytes at an odd address, inside the one je.
        let jump: [UInt8] = [0xe9, 0xa0, 0x01, 0x00, 0x00, 0x90] + Array(Self.code[6...])
        let kmem = try Self.check(jump, limit: 0)
        #expect(!kmem.passed)
        #expect(kmem.detail.contains("not one naturally aligned"), "\(kmem.detail)")
        let swap = try Self.check(jump, limit: 16)
        #expect(swap.passed, "\(swap.detail)")
        #expect(swap.detail.contains("6-byte compare-and-swap at 0x1001 inside one instruction"), "\(swap.detail)")
        // Over the target's limit.
        #expect(!(try Self.check(jump, limit: 4).passed))
    }

    @Test func changeAcrossInstructionsIsRefusedEvenWithACompareAndSwap() throws {
        var across = Self.code
        across[5] = 0x01
        across[6] = 0x49
        let finding = try Self.check(across, limit: 16)
        #expect(!finding.passed)
        #expect(finding.detail.contains("spans several instructions"), "\(finding.detail)")
    }
}
