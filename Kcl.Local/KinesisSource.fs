(*
    A stream at a Kinesis endpoint as the local daemon's source: one poller per shard, reading the way a polling KCL
    worker does (an iterator from the checkpoint or initialPositionInStream, GetRecords up to maxRecords every
    idleTimeBetweenReadsInMillis, a closed shard read to SHARD_END, a child only after its parents ended), into
    the shard's feed, where the shard's driver picks the records up.
*)
namespace Kcl.Local

open System
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks
open Kcl.Core
open Kcl.Kinesis

[<RequireQualifiedAccess>]
module internal KinesisSource =
    let private isLoopback (endpoint: Uri) = endpoint.IsLoopback

    /// A client for the endpoint; an emulator on loopback gets a dummy key pair when no credentials are configured.
    let client (endpoint: Uri) (region: string) =
        let credentials =
            try
                AwsCredentials.Resolve()
            with :? InvalidOperationException when isLoopback endpoint ->
                AwsCredentials("local", "local", Source = "a dummy key pair for a loopback endpoint")

        new KinesisClient(KinesisClientOptions(Region = region, Endpoint = endpoint, Credentials = credentials))

    /// Every shard of the stream; an error names the stream and the endpoint.
    let listShards (client: KinesisClient) (stream: string) : Task<Result<Shard list, string>> =
        task {
            try
                let! shards = client.ListShardsAsync stream
                return Ok(List.ofSeq shards)
            with :? KinesisException as e ->
                return Error e.Message
        }

    /// Where a shard's reading starts, from its stored checkpoint (or the initial position's sentinel). As the KCL
    /// does, a checkpoint is read AT its sequence number, and the records up to it (sub-records included) are
    /// dropped, so a checkpoint in the middle of an aggregated record resumes with the next sub-record.
    let iteratorStart (checkpoint: string) : (ShardIteratorType * string) option =
        match checkpoint with
        | "SHARD_END" -> None
        | "TRIM_HORIZON" -> Some(ShardIteratorType.TrimHorizon, null)
        | "LATEST" -> Some(ShardIteratorType.Latest, null)
        | digits -> Some(ShardIteratorType.AtSequenceNumber, digits)

    /// A Kinesis record as the daemon delivers it: a KPL-aggregated one as its sub-records (numbered 0, 1, …),
    /// any other as one record with sub-sequence number 0.
    let toRecords (r: KinesisRecord) : Record list =
        let make key data sub =
            {
                Data = ReadOnlyMemory data
                PartitionKey = key
                SequenceNumber = SequenceNumber.parse r.SequenceNumber
                SubSequenceNumber = sub
                ApproximateArrivalTimestamp = Some r.ApproximateArrivalTimestamp
            }

        match Aggregation.tryDecode r.Data with
        | Some subRecords -> subRecords |> List.mapi (fun i (key, data) -> make key data (int64 i))
        | None -> [ make r.PartitionKey r.Data 0L ]

    /// Whether a record comes after a checkpoint (sequence number, sub-sequence number).
    let isAfter (checkpoint: string, checkpointSub: int64) (record: Record) =
        match Shards.compareDigits record.SequenceNumber.Value checkpoint with
        | 0 -> record.SubSequenceNumber > checkpointSub
        | c -> c > 0

    let private poll
        (client: KinesisClient)
        (stream: string)
        (config: DaemonConfig)
        (shard: Shard)
        (feed: ShardFeed)
        (checkpoint: string, checkpointSub: int64)
        (parents: Task list)
        (log: string -> unit)
        (token: CancellationToken)
        =
        task {
            // KCL: a child shard's processing starts only once its parents have been read to SHARD_END.
            do! Task.WhenAll(parents)

            match iteratorStart checkpoint with
            | None -> feed.Complete()
            | Some(kind, after) ->
                let mutable last = after
                let mutable iterator = null
                let mutable reading = true

                let fresh () =
                    task {
                        let kind, from =
                            if isNull last || last = after then kind, after
                            else ShardIteratorType.AfterSequenceNumber, last

                        let! it = client.GetShardIteratorAsync(stream, shard.ShardId, kind, from, token)
                        iterator <- it
                    }

                while reading && not token.IsCancellationRequested do
                    try
                        if isNull iterator then
                            do! fresh ()

                        let! batch = client.GetRecordsAsync(iterator, config.MaxRecords, token)

                        for r in batch.Records do
                            for record in toRecords r do
                                if isNull after || isAfter (after, checkpointSub) record then
                                    feed.AddRecord record

                            last <- r.SequenceNumber

                        match batch.NextShardIterator with
                        | null ->
                            feed.Complete()
                            reading <- false
                        | next ->
                            iterator <- next
                            do! Task.Delay(config.IdleTimeBetweenReads, token)
                    with
                    | :? OperationCanceledException -> reading <- false
                    | :? KinesisException as e when e.ErrorCode = "ExpiredIteratorException" -> iterator <- null
                    | :? KinesisException as e ->
                        log (sprintf "%s: %s; retrying" shard.ShardId e.Message)

                        try
                            do! Task.Delay(config.IdleTimeBetweenReads, token)
                        with :? OperationCanceledException ->
                            reading <- false
        }

    /// Starts a poller per shard (shard, its feed and its checkpoint); the task ends when every poller has ended or
    /// `token` is cancelled.
    let start
        (client: KinesisClient)
        (stream: string)
        (config: DaemonConfig)
        (shards: (Shard * (ShardFeed * (string * int64))) list)
        (log: string -> unit)
        (token: CancellationToken)
        : Task =
        let ended = Dictionary<string, TaskCompletionSource>()

        for shard, _ in shards do
            ended[shard.ShardId] <- TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

        let parentsOf (shard: Shard) =
            [ shard.ParentShardId; shard.AdjacentParentShardId ]
            |> List.filter (fun p -> not (isNull p) && ended.ContainsKey p)
            |> List.map (fun p -> ended[p].Task)

        shards
        |> List.map (fun (shard, (feed, checkpoint)) ->
            Task.Run(fun () ->
                task {
                    try
                        do! poll client stream config shard feed checkpoint (parentsOf shard) log token
                    finally
                        ended[shard.ShardId].TrySetResult() |> ignore
                }
                :> Task))
        |> Task.WhenAll
