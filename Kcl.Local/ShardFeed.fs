(*
    One shard's records as the local stream holds them: appended by the source (all at once, or as stdin lines
    arrive), numbered per shard, read by the shard's driver from any position its checkpoint has not passed, and closed
    when the source ends.
*)
namespace Kcl.Local

open System
open System.Collections.Generic
open Kcl.Core

/// What a read of a shard found.
[<RequireQualifiedAccess>]
type FeedRead =
    /// Records from the position on (at most the limit asked for); `Remaining` more are ready after them.
    | Records of records: Record[] * remaining: int
    /// Nothing ready yet, but the source may add more.
    | Waiting
    /// Nothing more will come: the shard has ended.
    | Ended

/// The records of one shard. Thread-safe: the source appends while the driver reads.
[<Sealed>]
type ShardFeed(index: int, shardId: string) =
    let records = List<Record>()
    // The position of records[0]: the records a checkpoint has passed are let go (`Release`).
    let mutable released = 0
    let mutable ended = false
    let gate = obj ()

    /// A shard of the local stream, with the id Kinesis gives the shard with this 0-based index.
    new(index: int) = ShardFeed(index, Shards.shardId index)

    /// The shard's 0-based index.
    member _.Index = index
    /// The shard's id.
    member _.ShardId = shardId

    /// Appends a record read from a Kinesis endpoint, keeping its own sequence numbers.
    member _.AddRecord(record: Record) = lock gate (fun () -> records.Add record)

    /// Appends a record, numbering it after the ones before.
    member _.Add(record: SourceRecord, arrival: DateTimeOffset) =
        lock gate (fun () ->
            records.Add
                {
                    Data = ReadOnlyMemory record.Data
                    PartitionKey = record.PartitionKey
                    SequenceNumber =
                        SequenceNumber.parse (Shards.sequenceNumber index (int64 (released + records.Count) + 1L))
                    SubSequenceNumber = 0L
                    ApproximateArrivalTimestamp = Some arrival
                })

    /// Marks the end of the shard: once its records are read, reads say `Ended`.
    member _.Complete() = lock gate (fun () -> ended <- true)

    /// How many records the shard has had so far, released ones included: the position after the newest.
    member _.Count = lock gate (fun () -> released + records.Count)

    /// How many records the shard still holds.
    member internal _.Held = lock gate (fun () -> records.Count)

    /// The 0-based position just after the record with this sequence number (the first record above it), for
    /// resuming after a checkpoint; the first record held, if the record was released.
    member _.PositionAfter(sequenceNumber: string) =
        lock gate (fun () ->
            // A shard's sequence numbers never decrease, so the first record above this one is found by halving.
            let mutable low = 0
            let mutable high = records.Count

            while low < high do
                let middle = (low + high) >>> 1

                if Shards.compareDigits records[middle].SequenceNumber.Value sequenceNumber <= 0 then
                    low <- middle + 1
                else
                    high <- middle

            released + low)

    /// Reads at most `limit` records from the 0-based position, which must not be below one released.
    member _.Read(position: int, limit: int) =
        lock gate (fun () ->
            let at = position - released

            if at < 0 then
                invalidArg (nameof position) (sprintf "%s: the records below position %d are released" shardId released)
            elif at < records.Count then
                let count = min limit (records.Count - at)
                let batch = Array.zeroCreate count
                records.CopyTo(at, batch, 0, count)
                FeedRead.Records(batch, records.Count - at - count)
            elif ended then
                FeedRead.Ended
            else
                FeedRead.Waiting)

    /// Lets go of the records below the position, which the shard's checkpoint has passed: within a run no child
    /// reads behind its checkpoint, and a source that never ends (stdin, a Kinesis endpoint) would otherwise be held
    /// whole. It is done in steps of at least half of what is held, so that moving the rest down costs no more than
    /// what is let go.
    member internal _.Release(position: int) =
        lock gate (fun () ->
            let count = min (position - released) records.Count

            if count > 0 && count * 2 >= records.Count then
                records.RemoveRange(0, count)
                released <- released + count)
