import Testing
@testable import Targets

/// The pure pieces of the GDB client. Their real oracles are the gdbserver and QEMU tests; these
/// pin down edge cases those peers do not produce on demand.
struct GDBProtocolPiecesTests {
    @Test func framingEscapesAndChecksums() {
        var out: [UInt8] = []
        RSPConnection.frame(Array("m10,4".utf8), into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "$m10,4#2e")   // 0x6d+0x31+0x30+0x2c+0x34 = 0x12e
        out.removeAll()
        RSPConnection.frame([0x24, 0x23, 0x7d, 0x2a], into: &out)       // $ # } * must be escaped
        #expect(Array(out[1..<9]) == [0x7d, 0x04, 0x7d, 0x03, 0x7d, 0x5d, 0x7d, 0x0a])
    }

    @Test func hexCodec() {
        var out: [UInt8] = []
        HexCodec.appendNumber(0, to: &out)
        out.append(0x2c)
        HexCodec.appendNumber(0xffff_ffff_8216_1900, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == "0,ffffffff82161900")
        #expect(HexCodec.decode(Array("00ff7Fa0".utf8)) == [0x00, 0xff, 0x7f, 0xa0])
        #expect(HexCodec.decode(Array("0g".utf8)) == nil)
        #expect(HexCodec.decode(Array("abc".utf8)) == nil)
    }

    @Test func featuresThreadsAndStopReplies() {
        let features = GDBRemoteTarget.parseFeatures("PacketSize=47ff;QStartNoAckMode+;multiprocess+;swbreak-;qXfer:exec-file:read+")
        #expect(features["PacketSize"] == "47ff" && features["QStartNoAckMode"] == "+" && features["swbreak"] == "-")
        #expect(GDBRemoteTarget.thread(inStopReply: Array("T0206:b0548c59fc7f0* ;thread:p52cf.52cf;core:1;".utf8)) == "p52cf.52cf")
        #expect(GDBRemoteTarget.thread(inStopReply: Array("S05".utf8)) == nil)
        #expect(GDBRemoteTarget.processID(ofThread: "p52cf.52d0") == 0x52cf)
        #expect(GDBRemoteTarget.processID(ofThread: "p01.02") == 1)
        #expect(GDBRemoteTarget.processID(ofThread: "1a") == nil)
    }

    @Test func registerLayoutFromIncludedDescriptions() throws {
        let main = #"<?xml version="1.0"?><target><architecture>i386:x86-64</architecture><xi:include href="core.xml"/></target>"#
        let core = """
            <feature name="org.gnu.gdb.i386.core">
              <reg name="rax" bitsize="64"/><reg name="rip" bitsize="64" type="code_ptr"/>
              <reg name="eflags" bitsize="32"/><reg name="ss_base" bitsize="64"/><reg name='cr3' bitsize='64'/>
            </feature>
            """
        let layout = try #require(try RegisterLayout.parse(main) { name throws(TargetError) in
            guard name == "core.xml" else { throw TargetError.notSupported(target: "t", operation: name, reason: "") }
            return core
        })
        #expect(layout.architecture == "i386:x86-64" && layout.pcName == "rip")
        #expect(layout.slots["cr3"] == RegisterLayout.Slot(offset: 28, size: 8))
        // A `g` reply without ss_base (QEMU 7.2) moves cr3 up; an unexplained size is refused.
        #expect(layout.slots(forReplyBytes: 36)?["cr3"] == RegisterLayout.Slot(offset: 28, size: 8))
        #expect(layout.slots(forReplyBytes: 28)?["cr3"] == RegisterLayout.Slot(offset: 20, size: 8))
        #expect(layout.slots(forReplyBytes: 30) == nil)
    }

    @Test func pageTableWalk() throws {
        // A hand-built x86-64 hierarchy: one 4 KiB page, one 2 MiB page, one 1 GiB page.
        var memory: [UInt64: UInt64] = [:]
        let root: UInt64 = 0x10_0000
        func entry(_ table: UInt64, _ index: UInt64, _ value: UInt64) { memory[table + index * 8] = value }
        let va4k: UInt64 = 0xffff_ffff_8100_1234, va2m: UInt64 = 0xffff_ffff_8120_0abc, va1g: UInt64 = 0xffff_8880_4000_0123
        entry(root, 511, 0x20_0000 | 0x63)                                      // PML4 → PDPT
        entry(0x20_0000, (va4k >> 30) & 0x1ff, 0x30_0000 | 0x63)               // PDPT → PD
        entry(0x30_0000, (va4k >> 21) & 0x1ff, 0x40_0000 | 0x63)               // PD → PT
        entry(0x40_0000, (va4k >> 12) & 0x1ff, 0x8000_0000_0123_4000 | 0x63)   // PT → page (NX bit set)
        entry(0x30_0000, (va2m >> 21) & 0x1ff, 0x0260_0000 | 0xe3)             // 2 MiB page
        entry(root, (va1g >> 39) & 0x1ff, 0x50_0000 | 0x63)
        entry(0x50_0000, (va1g >> 30) & 0x1ff, 0x1_4000_0000 | 0xe3)           // 1 GiB page
        let read = { (address: UInt64) throws(TargetError) -> UInt64 in memory[address] ?? 0 }
        #expect(try PageTableWalk.translate(va4k, root: root, levels: 4, readEntry: read)! == (0x123_4234, 0x1000))
        #expect(try PageTableWalk.translate(va2m, root: root, levels: 4, readEntry: read)! == (0x0260_0abc, 0x20_0000))
        #expect(try PageTableWalk.translate(va1g, root: root, levels: 4, readEntry: read)! == (0x1_4000_0123, 0x4000_0000))
        #expect(try PageTableWalk.translate(0xffff_c900_0000_0000, root: root, levels: 4, readEntry: read) == nil)
        // PTI: the user copy of the top table is the odd page after the kernel's; PCID bits dropped.
        #expect(PageTableWalk.kernelRoot(cr3: 0x8000_0000_0490_9805, pti: true) == 0x0490_8000)
        #expect(PageTableWalk.kernelRoot(cr3: 0x0490_9000, pti: false) == 0x0490_9000)
    }
}
