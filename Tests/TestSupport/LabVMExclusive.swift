import Testing

/// One VM-booting suite at a time in this test process (all test targets run in one process): `.serialized` orders tests inside a suite, but
/// top-level suites still run in parallel, and two TCG VMs on two cores slow each other past
/// the console's timeouts. Every suite that boots VMs takes this trait (held for the whole suite).
public struct LabVMExclusive: SuiteTrait, TestScoping {
    public init() {}

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> LabVMExclusive? {
        test.isSuite ? self : nil
    }

    public func provideScope(for test: Test, testCase: Test.Case?,
                      performing function: @Sendable () async throws -> Void) async throws {
        await LabVMTurn.shared.acquire()
        do {
            try await function()
        } catch {
            await LabVMTurn.shared.release()
            throw error
        }
        await LabVMTurn.shared.release()
    }
}

extension Trait where Self == LabVMExclusive {
    /// Waits for every other lab suite of this process to finish first.
    public static var labVMExclusive: LabVMExclusive { LabVMExclusive() }
}

/// A first-come, first-served turn without blocking a thread while waiting.
public actor LabVMTurn {
    public static let shared = LabVMTurn()
    private var taken = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    public func acquire() async {
        if !taken {
            taken = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    public func release() {
        if waiting.isEmpty { taken = false } else { waiting.removeFirst().resume() }
    }
}
