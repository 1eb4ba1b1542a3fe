import CCapstone
import ELF

/// Decodes machine code with Capstone (4.0.x, Debian's libcapstone).
///
/// Owns two Capstone handles: one with `CS_OPT_DETAIL` for `decode`, which needs instruction groups and
/// operands to classify branches and find their targets, and one without for `boundaries`, where detail
/// would only cost time. Capstone handles are not thread-safe, so neither is this class: use one per
/// thread.
public final class Disassembler {
    public let architecture: Architecture
    public let syntax: AssemblySyntax

    private var detailed: csh = 0
    private var fast: csh = 0
    // One reusable instruction buffer per handle (cs_malloc sizes `detail` from the handle's options).
    private let detailedInsn: UnsafeMutablePointer<cs_insn>
    private let fastInsn: UnsafeMutablePointer<cs_insn>

    public init(architecture: Architecture, syntax: AssemblySyntax = .att) throws(DisassemblyError) {
        self.architecture = architecture
        self.syntax = syntax
        let (arch, mode): (cs_arch, cs_mode) = switch architecture {
        case .x86_64: (CS_ARCH_X86, CS_MODE_64)
        case .i386: (CS_ARCH_X86, CS_MODE_32)
        case .arm64: (CS_ARCH_ARM64, CS_MODE_LITTLE_ENDIAN)
        }
        detailed = try Self.open(arch, mode, architecture, syntax, detail: true)
        do {
            fast = try Self.open(arch, mode, architecture, syntax, detail: false)
        } catch {
            cs_close(&detailed)
            throw error
        }
        guard let d = cs_malloc(detailed), let f = cs_malloc(fast) else {
            cs_close(&detailed)
            cs_close(&fast)
            throw .engine(architecture: architecture, call: "cs_malloc", code: CS_ERR_MEM.rawValue,
                          message: String(cString: cs_strerror(CS_ERR_MEM)))
        }
        detailedInsn = d
        fastInsn = f
    }

    deinit {
        cs_free(detailedInsn, 1)
        cs_free(fastInsn, 1)
        cs_close(&detailed)
        cs_close(&fast)
    }

    private static func open(_ arch: cs_arch, _ mode: cs_mode, _ architecture: Architecture,
                             _ syntax: AssemblySyntax, detail: Bool) throws(DisassemblyError) -> csh {
        var handle: csh = 0
        var status = cs_open(arch, mode, &handle)
        guard status == CS_ERR_OK else {
            throw .engine(architecture: architecture, call: "cs_open", code: status.rawValue,
                          message: String(cString: cs_strerror(status)))
        }
        if arch == CS_ARCH_X86 {
            // Capstone's x86 default is Intel; objdump's (and ours) is AT&T.
            let value = syntax == .att ? CS_OPT_SYNTAX_ATT : CS_OPT_SYNTAX_INTEL
            status = cs_option(handle, CS_OPT_SYNTAX, Int(value.rawValue))
        }
        if status == CS_ERR_OK, detail {
            status = cs_option(handle, CS_OPT_DETAIL, Int(CS_OPT_ON.rawValue))
        }
        guard status == CS_ERR_OK else {
            cs_close(&handle)
            throw .engine(architecture: architecture, call: "cs_option", code: status.rawValue,
                          message: String(cString: cs_strerror(status)))
        }
        return handle
    }

    // MARK: Decoding

    /// Decodes every instruction in `bytes`, the first at `address`. Bytes that do not decode become an
    /// invalid `(bad)` instruction (one byte on x86 like objdump, one 4-byte word on arm64) and decoding
    /// continues after them, so the result always covers all of `bytes`.
    public func decode(_ bytes: some Collection<UInt8>, address: UInt64) -> [Instruction] {
        if let result = bytes.withContiguousStorageIfAvailable({ buffer in
            decode(UnsafeRawBufferPointer(buffer), address: address, limit: Int.max)
        }) {
            return result
        }
        return Array(bytes).withUnsafeBytes { decode($0, address: address, limit: Int.max) }
    }

    /// Decodes the first instruction of `bytes` (possibly an invalid one); nil when `bytes` is empty.
    public func decodeOne(_ bytes: some Collection<UInt8>, address: UInt64) -> Instruction? {
        // An x86 instruction is at most 15 bytes: don't copy more than that.
        let head = bytes.prefix(16)
        if let result = head.withContiguousStorageIfAvailable({ buffer in
            decode(UnsafeRawBufferPointer(buffer), address: address, limit: 1)
        }) {
            return result.first
        }
        return Array(head).withUnsafeBytes { decode($0, address: address, limit: 1) }.first
    }

    private func decode(_ buffer: UnsafeRawBufferPointer, address: UInt64, limit: Int) -> [Instruction] {
        guard let base = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self), buffer.count > 0 else { return [] }
        var result: [Instruction] = []
        result.reserveCapacity(min(limit, buffer.count / 3 + 1))
        let count = buffer.count
        var offset = 0
        let insn = detailedInsn
        while offset < count, result.count < limit {
            let here = UnsafeBufferPointer(start: base + offset, count: count - offset)
            let at = address &+ UInt64(offset)
            var code: UnsafePointer<UInt8>? = here.baseAddress
            var size = here.count
            var next = at
            let instruction: Instruction
            if cs_disasm_iter(detailed, &code, &size, &next, insn) {
                if isX86, insn.pointee.id == X86_INS_UD2B.rawValue, let ud1 = gap(here, at, ud1: true) {
                    instruction = ud1
                } else {
                    instruction = self.instruction(from: insn)
                }
            } else if isX86, let missing = gap(here, at, ud1: false) {
                instruction = missing
            } else {
                let skip = min(architecture.fixedInstructionSize ?? 1, here.count)
                instruction = Instruction(address: at, bytes: Array(here.prefix(skip)), mnemonic: "(bad)",
                                          operands: "", isInvalid: true)
            }
            result.append(instruction)
            offset += instruction.size
        }
        return result
    }

    /// Start addresses of the instructions in `bytes` (a linear sweep, undecodable bytes skipped as in
    /// `decode`). The fast path for boundary checks over whole sections: no detail, no Strings, and on
    /// x86-64 the common encodings measured by `X86LengthDecoder` without Capstone at all.
    public func boundaries(_ bytes: UnsafeRawBufferPointer, address: UInt64) -> [UInt64] {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count > 0 else { return [] }
        var result: [UInt64] = []
        // x86 code averages about 3.5 bytes an instruction; arm64 is exactly 4.
        result.reserveCapacity(bytes.count / 3 + 1)
        let count = bytes.count
        let skipSize = architecture.fixedInstructionSize ?? 1
        let ud2b = X86_INS_UD2B.rawValue
        var offset = 0
        let lengthTable = architecture == .x86_64
        while offset < count {
            let at = address &+ UInt64(offset)
            result.append(at)
            if lengthTable, let length = X86LengthDecoder.length(base + offset, count - offset) {
                offset += length
                continue
            }
            var code: UnsafePointer<UInt8>? = UnsafePointer(base + offset)
            var size = count - offset
            var next = at
            if cs_disasm_iter(fast, &code, &size, &next, fastInsn) {
                if isX86, fastInsn.pointee.id == ud2b,
                   let ud1 = gap(UnsafeBufferPointer(start: base + offset, count: count - offset), at, ud1: true) {
                    offset += ud1.size
                } else {
                    offset += Int(fastInsn.pointee.size)
                }
            } else if isX86, let missing = gap(UnsafeBufferPointer(start: base + offset, count: count - offset), at,
                                               ud1: false) {
                offset += missing.size
            } else {
                offset += min(skipSize, count - offset)
            }
        }
        return result
    }

    private var isX86: Bool { architecture != .arm64 }

    /// An instruction Capstone 4 lacks or gets the length of wrong (see `Capstone4Gaps`), decoded with
    /// the detailed handle's help; nil when these bytes are not one of them.
    private func gap(_ bytes: UnsafeBufferPointer<UInt8>, _ address: UInt64, ud1: Bool) -> Instruction? {
        let is64 = architecture == .x86_64
        let retry: Capstone4Gaps.Retry = { [self] substitute in
            substitute.withUnsafeBufferPointer { buffer in
                var code: UnsafePointer<UInt8>? = buffer.baseAddress
                var size = buffer.count
                var next = address
                guard cs_disasm_iter(detailed, &code, &size, &next, detailedInsn) else { return nil }
                let insn = detailedInsn
                return Capstone4Gaps.Decoded(
                    length: Int(insn.pointee.size),
                    mnemonic: withUnsafeBytes(of: &insn.pointee.mnemonic) { Self.string($0) },
                    operands: withUnsafeBytes(of: &insn.pointee.op_str) { Self.string($0) })
            }
        }
        let decoded = ud1 ? Capstone4Gaps.ud1(bytes, is64: is64, retry: retry)
                          : Capstone4Gaps.decodeMissing(bytes, is64: is64, syntax: syntax, retry: retry)
        guard let decoded, decoded.length > 0, decoded.length <= bytes.count else { return nil }
        return Instruction(address: address, bytes: Array(bytes.prefix(decoded.length)), mnemonic: decoded.mnemonic,
                           operands: decoded.operands)
    }

    // MARK: From Capstone to Instruction

    private func instruction(from insn: UnsafeMutablePointer<cs_insn>) -> Instruction {
        let size = Int(insn.pointee.size)
        let bytes = withUnsafeBytes(of: &insn.pointee.bytes) { Array($0.prefix(size)) }
        let mnemonic = withUnsafeBytes(of: &insn.pointee.mnemonic) { Self.string($0) }
        let operands = withUnsafeBytes(of: &insn.pointee.op_str) { Self.string($0) }
        let (branch, target) = switch architecture {
        case .x86_64, .i386: x86Branch(insn)
        case .arm64: arm64Branch(insn)
        }
        return Instruction(address: insn.pointee.address, bytes: bytes, mnemonic: mnemonic, operands: operands,
                           branch: branch, target: target, isInvalid: false)
    }

    private static func string(_ raw: UnsafeRawBufferPointer) -> String {
        let length = raw.firstIndex(of: 0) ?? raw.count
        return String(decoding: UnsafeRawBufferPointer(rebasing: raw[0..<length]), as: UTF8.self)
    }

    private func inGroup(_ insn: UnsafeMutablePointer<cs_insn>, _ group: UInt32) -> Bool {
        cs_insn_group(detailed, insn, group)
    }

    /// x86: the kind from Capstone's groups; a direct branch's target is its (already absolute)
    /// immediate operand.
    private func x86Branch(_ insn: UnsafeMutablePointer<cs_insn>) -> (BranchKind, UInt64?) {
        let id = insn.pointee.id
        let isCall = inGroup(insn, CS_GRP_CALL.rawValue)
        let isJump = inGroup(insn, CS_GRP_JUMP.rawValue)
        if !isCall && !isJump {
            if inGroup(insn, CS_GRP_RET.rawValue) || inGroup(insn, CS_GRP_IRET.rawValue) { return (.ret, nil) }
            if inGroup(insn, CS_GRP_INT.rawValue) { return (.interrupt, nil) }
            return (.none, nil)
        }
        guard let detail = insn.pointee.detail else { return (.none, nil) }
        let x86 = detail.pointee.x86
        // Far forms with an immediate (`ljmp $0x10,$0x1000`) carry a segment too: no linear target.
        let far = id == X86_INS_LJMP.rawValue || id == X86_INS_LCALL.rawValue
        var immediate: Int64?
        if x86.op_count == 1 {
            let op = x86.operands.0
            if op.type == X86_OP_IMM { immediate = op.imm }
        }
        let target = far ? nil : immediate.map { UInt64(bitPattern: $0) }
        if isCall { return (immediate != nil || far && x86.op_count == 2 ? .call : .indirectCall, target) }
        if id == X86_INS_JMP.rawValue || far {
            return (immediate != nil || far && x86.op_count == 2 ? .jump : .indirectJump, target)
        }
        return (.conditionalJump, target)
    }

    /// arm64: Capstone 4's groups do not tell `bl` from `b`, so the kind comes from the instruction id;
    /// the target is the last immediate operand (`tbz x0, #3, #0x40` has two).
    private func arm64Branch(_ insn: UnsafeMutablePointer<cs_insn>) -> (BranchKind, UInt64?) {
        let id = insn.pointee.id
        let kind: BranchKind
        switch id {
        case ARM64_INS_B.rawValue:
            let cc = insn.pointee.detail?.pointee.arm64.cc ?? ARM64_CC_INVALID
            kind = (cc == ARM64_CC_INVALID || cc == ARM64_CC_AL || cc == ARM64_CC_NV) ? .jump : .conditionalJump
        case ARM64_INS_CBZ.rawValue, ARM64_INS_CBNZ.rawValue, ARM64_INS_TBZ.rawValue, ARM64_INS_TBNZ.rawValue:
            kind = .conditionalJump
        case ARM64_INS_BL.rawValue: kind = .call
        case ARM64_INS_BR.rawValue: kind = .indirectJump
        case ARM64_INS_BLR.rawValue: kind = .indirectCall
        case ARM64_INS_RET.rawValue, ARM64_INS_ERET.rawValue: kind = .ret
        case ARM64_INS_SVC.rawValue, ARM64_INS_HVC.rawValue, ARM64_INS_SMC.rawValue, ARM64_INS_BRK.rawValue,
             ARM64_INS_HLT.rawValue:
            kind = .interrupt
        default: return (.none, nil)
        }
        guard kind == .jump || kind == .conditionalJump || kind == .call,
              let detail = insn.pointee.detail else { return (kind, nil) }
        var arm64 = detail.pointee.arm64
        let count = Int(arm64.op_count)
        let target: UInt64? = withUnsafeBytes(of: &arm64.operands) { raw in
            let ops = raw.bindMemory(to: cs_arm64_op.self)
            for i in stride(from: min(count, ops.count) - 1, through: 0, by: -1) where ops[i].type == ARM64_OP_IMM {
                return UInt64(bitPattern: ops[i].imm)
            }
            return nil
        }
        return (kind, target)
    }
}
