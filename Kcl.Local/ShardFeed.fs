(*
    One shard's records as the local stream holds them: appended by the source (all at once, or as stdin lines
    arrive), numbered per shard, read by the shard's driver from any position, and closed when the source ends.
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
                    SequenceNumber = SequenceNumber.parse (Shards.sequenceNumber index (int64 records.Count + 1L))
                    SubSequenceNumber = 0L
                    ApproximateArrivalTimestamp = Some arrival
                })

    /// Marks the end of the shard: once its records are read, reads say `Ended`.
    member _.Complete() = lock gate (fun () -> ended <- true)

    /// How many records the shard holds now.
    member _.Count = lock gate (fun () -> records.Count)

    /// The 0-based position just after the record with this sequence number (the first record above it), for
    /// resuming after a checkpoint.
    member _.PositionAfter(sequenceNumber: string) =
        lock gate (fun () ->
            let mutable i = 0

            while i < records.Count
                  && Shards.compareDigits records[i].SequenceNumber.Value sequenceNumber <= 0 do
                i <- i + 1

            i)

    /// Reads at most `limit` records from the 0-based position.
    member _.Read(position: int, limit: int) =
        lock gate (fun () ->
            if position < records.Count then
                let count = min limit (records.Count - position)
                let batch = Array.zeroCreate count
                records.CopyTo(position, batch, 0, count)
                FeedRead.Records(batch, records.Count - position - count)
            elif ended then
                FeedRead.Ended
            else
                FeedRead.Waiting)
