(* What a local daemon run did, as one line of text or one JSON object: the tool prints it last on stdout. *)
namespace Kcl.Local

open System
open System.Globalization
open System.Text.Json.Nodes
open Kcl.Core

/// The outcome of a local daemon run.
type Summary =
    {
        /// The application whose leases were used.
        ApplicationName: string
        /// Every shard's result, in shard order.
        Shards: ShardResult list
        /// From the first child's start to the last one's exit.
        Elapsed: TimeSpan
    }

    /// Every finding of severity Violation, with the failures to start a child as messages.
    member this.Violations: Finding list =
        this.Shards
        |> List.collect (fun s -> s.Session |> Option.map _.Violations |> Option.defaultValue [])

    /// Every warning.
    member this.Warnings: Finding list =
        this.Shards
        |> List.collect (fun s -> s.Session |> Option.map _.Warnings |> Option.defaultValue [])

    /// Shards that did not reach a clean end, with the reason.
    member this.Failures =
        this.Shards
        |> List.choose (fun s ->
            match s.Ending with
            | ShardEnding.Failed reason -> Some(s.ShardId, reason)
            | _ -> None)

    /// True when every shard ended cleanly (shard end, lost lease, or already ended) with no violation.
    member this.Clean = this.Violations.IsEmpty && this.Failures.IsEmpty

    /// Records delivered in all.
    member this.Delivered = this.Shards |> List.sumBy _.Delivered
    /// Records checkpointed in all.
    member this.Checkpointed = this.Shards |> List.sumBy _.Checkpointed
    /// Records redelivered in all.
    member this.Redelivered = this.Shards |> List.sumBy _.Redelivered
    /// Payload bytes delivered in all.
    member this.Bytes = this.Shards |> List.sumBy _.Bytes

    /// Records delivered per second of the run.
    member this.RecordsPerSecond =
        if this.Elapsed.TotalSeconds > 0.0 then
            float this.Delivered / this.Elapsed.TotalSeconds
        else
            0.0

    /// The longest shard's steady state: from its first batch to its child's exit (`ShardResult.Streaming`).
    member this.Streaming =
        this.Shards
        |> List.fold (fun longest s -> max longest s.Streaming) TimeSpan.Zero

    /// Records delivered per second of the steady state (`Streaming`): the run's rate without the children's
    /// start-up, as the whole-process benchmark measures a child.
    member this.StreamingRecordsPerSecond =
        if this.Streaming.TotalSeconds > 0.0 then
            float this.Delivered / this.Streaming.TotalSeconds
        else
            0.0

    /// Payload megabytes (10^6 bytes) delivered per second of the run.
    member this.MegabytesPerSecond =
        if this.Elapsed.TotalSeconds > 0.0 then
            float this.Bytes / 1e6 / this.Elapsed.TotalSeconds
        else
            0.0

/// Rendering a summary.
[<RequireQualifiedAccess>]
module Summary =
    let private ending (shard: ShardResult) =
        match shard.Ending with
        | ShardEnding.ShardEnded ->
            if shard.Session |> Option.exists _.ShardEndCheckpointed then
                "SHARD_END"
            else
                "ended"
        | ShardEnding.LeaseLost -> "lease lost"
        | ShardEnding.AlreadyEnded -> "already at SHARD_END"
        | ShardEnding.Failed reason -> "failed: " + reason

    /// One line: totals, then each shard's delivered/checkpointed/redelivered and ending.
    let toLine (summary: Summary) =
        let inv (format: string) (value: float) =
            value.ToString(format, CultureInfo.InvariantCulture)

        let shards =
            summary.Shards
            |> List.map (fun s ->
                sprintf "%s %d/%d/%d %s" s.ShardId s.Delivered s.Checkpointed s.Redelivered (ending s))

        sprintf
            "kcl-local %s: %s; %d shards, %d delivered, %d checkpointed, %d redelivered, %d violations, %d warnings, %s s, %s records/s, %s MB/s [%s]"
            summary.ApplicationName
            (if summary.Clean then "OK" else "FAILED")
            summary.Shards.Length
            summary.Delivered
            summary.Checkpointed
            summary.Redelivered
            summary.Violations.Length
            summary.Warnings.Length
            (inv "0.00" summary.Elapsed.TotalSeconds)
            (inv "0" summary.RecordsPerSecond)
            (inv "0.00" summary.MegabytesPerSecond)
            (String.Join("; ", shards))

    let private findingJson (finding: Finding) =
        let node = JsonObject()
        node["severity"] <- JsonValue.Create(string finding.Severity)
        node["kind"] <- JsonValue.Create((sprintf "%A" finding.Kind).Split(' ')[0])
        node["shardId"] <- JsonValue.Create finding.ShardId.Value
        node["action"] <- (finding.Action |> Option.map JsonValue.Create |> Option.toObj)
        node["line"] <- (finding.Line |> Option.map JsonValue.Create |> Option.toObj)
        node["message"] <- JsonValue.Create finding.Message
        node

    /// The summary as one line of JSON.
    let toJson (summary: Summary) =
        let root = JsonObject()
        root["applicationName"] <- JsonValue.Create summary.ApplicationName
        root["clean"] <- JsonValue.Create summary.Clean
        root["delivered"] <- JsonValue.Create summary.Delivered
        root["checkpointed"] <- JsonValue.Create summary.Checkpointed
        root["redelivered"] <- JsonValue.Create summary.Redelivered
        root["bytes"] <- JsonValue.Create summary.Bytes
        root["elapsedSeconds"] <- JsonValue.Create(Math.Round(summary.Elapsed.TotalSeconds, 3))
        root["recordsPerSecond"] <- JsonValue.Create(Math.Round(summary.RecordsPerSecond, 1))
        root["megabytesPerSecond"] <- JsonValue.Create(Math.Round(summary.MegabytesPerSecond, 3))
        root["streamingSeconds"] <- JsonValue.Create(Math.Round(summary.Streaming.TotalSeconds, 3))
        root["streamingRecordsPerSecond"] <- JsonValue.Create(Math.Round(summary.StreamingRecordsPerSecond, 1))
        let shards = JsonArray()

        for s in summary.Shards do
            let node = JsonObject()
            node["shardId"] <- JsonValue.Create s.ShardId
            node["delivered"] <- JsonValue.Create s.Delivered
            node["checkpointed"] <- JsonValue.Create s.Checkpointed
            node["redelivered"] <- JsonValue.Create s.Redelivered
            node["ending"] <- JsonValue.Create(ending s)
            node["streamingSeconds"] <- JsonValue.Create(Math.Round(s.Streaming.TotalSeconds, 3))

            node["checkpoint"] <-
                (s.Session
                 |> Option.bind _.Checkpoint
                 |> Option.map (string >> JsonValue.Create)
                 |> Option.toObj)

            node["exitCode"] <- (s.ExitCode |> Option.map JsonValue.Create |> Option.toObj)
            shards.Add node

        root["shards"] <- shards
        let findings = JsonArray()

        for f in summary.Violations @ summary.Warnings do
            findings.Add(findingJson f)

        root["findings"] <- findings
        root.ToJsonString()
