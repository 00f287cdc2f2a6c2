(* What a test run shows: the daemon-side session's record, in C#'s shape. *)
namespace Kcl.Testing

open System
open System.Collections.Generic
open Kcl.Core

/// A checkpoint the daemon answered with no error.
[<Sealed>]
type RecordedCheckpoint internal (record: CheckpointRecord) =
    /// The action it came in, e.g. "processRecords".
    member _.Action = record.Action
    /// The lease's checkpoint after it: digits, or SHARD_END.
    member _.SequenceNumber = record.Position.SequenceNumber.Value
    /// The sub-sequence number of the lease's checkpoint after it.
    member _.SubSequenceNumber = record.Position.SubSequenceNumber
    /// False when it equalled the current checkpoint, which the daemon treats as a silent no-op.
    member _.Changed = record.Changed
    /// "processRecords: 4959...898/0".
    override _.ToString() = sprintf "%s: %O" record.Action record.Position

/// Something the processor did that the real daemon would hang, exit or wedge the shard on (or, for a warning, log).
[<Sealed>]
type ProtocolViolation internal (finding: Finding) =
    /// The action awaiting its status at the time, or the last one sent; null before any.
    member _.Action = Option.toObj finding.Action
    /// The processor's stdout line that caused it, or null when no single line did (a timeout, a missing exit...).
    member _.Line = Option.toObj finding.Line
    /// What happened, and what the real daemon would do.
    member _.Message = finding.Message
    /// True when the real daemon would only log it.
    member _.IsWarning = (finding.Severity = FindingSeverity.Warning)
    /// The violation in one line, with the offending line.
    override _.ToString() =
        match finding.Line with
        | Some line -> sprintf "%O; the line: %s" finding line
        | None -> string finding

/// What happened in a test run, for assertions.
[<Sealed>]
type TestRun internal (session: DaemonSession.Session, exitCode: int option) =
    static let listOf (items: seq<'T>) : IReadOnlyList<'T> = Array.ofSeq items

    /// The processor's exit code, or null when it did not exit in time after stdin was closed.
    member _.ExitCode = Option.toNullable exitCode
    /// Every checkpoint the daemon answered with no error, in order.
    member _.Checkpoints = session.Checkpoints |> Seq.map RecordedCheckpoint |> listOf
    /// The action each accepted status answered, in order.
    member _.Statuses = listOf session.Statuses
    /// Every line the processor wrote to its stdout, in order, empty lines left out.
    member _.StdoutLines =
        session.Lines |> Seq.map _.Text |> Seq.filter (String.IsNullOrEmpty >> not) |> listOf
    /// True when the shard's checkpoint ended at SHARD_END.
    member _.ShardEndCheckpointed = session.ShardEndCheckpointed
    /// True when an injected ShutdownException told the processor the lease was lost.
    member _.LeaseLost = session.LeaseLost
    /// What the real daemon would hang, exit or wedge the shard on, in order.
    member _.Violations = session.Violations |> Seq.map ProtocolViolation |> listOf
    /// What the real daemon would only log, in order.
    member _.Warnings = session.Warnings |> Seq.map ProtocolViolation |> listOf

    /// Throws `InvalidOperationException` listing every violation when there is any.
    member this.EnsureNoViolations() =
        if not session.Violations.IsEmpty then
            let lines = this.Violations |> Seq.map string
            invalidOp ("the processor broke the protocol:" + Environment.NewLine + String.Join(Environment.NewLine, lines))

    /// Every violation and warning, or "no violations".
    override this.ToString() =
        if session.Findings.IsEmpty then
            "no violations"
        else
            String.Join(Environment.NewLine, session.Findings |> Seq.map string)
