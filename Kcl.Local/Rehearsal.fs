(*
    A dry run of one shard's session, in memory, while the run starts. The tool runs with tiered compilation off
    (bench/README.md, "Local daemon"), so each method is compiled, fully optimised, on its first call. Without the
    rehearsal those first calls came with the first batches: a profile showed kcl-local compiling the session's
    reading of checkpoints and statuses and the encoding of batches for about 100 ms after the first `processRecords`,
    while the child waited for its replies. The session and the encoding are pure, so a scratch session has nothing to
    undo.
*)
module internal Kcl.Local.Rehearsal

open System
open System.Threading.Tasks
open Kcl.Core

let private status action =
    sprintf """{"action":"status","responseFor":"%s"}""" action

/// One shard's whole session with a well-behaved child, as the driver goes through it: `initialize`, a batch
/// checkpointed by the child at the batch's end and then at its last record, `shardEnded` checkpointed at SHARD_END.
/// Returns the scratch session, for tests.
let rehearse () : DaemonSession.Session =
    let shard = Shards.shardId 0
    let options = SessionOptions.Create(ShardId shard)
    let arrival = DateTimeOffset.UtcNow

    let records =
        Array.init 2 (fun i ->
            {
                Data = ReadOnlyMemory(Array.create 64 (byte 'k'))
                PartitionKey = "rehearsal"
                SequenceNumber = SequenceNumber.parse (Shards.sequenceNumber 0 (int64 i + 1L))
                SubSequenceNumber = 0L
                ApproximateArrivalTimestamp = Some arrival
            })

    let mutable session = DaemonSession.create options

    let open' message =
        match DaemonSession.tryOpen message session with
        | Ok next -> session <- next
        | Error reason -> invalidOp reason

    let reply line =
        session <- fst (DaemonSession.receive line session)

    session <- fst (DaemonSession.send (DaemonMessage.Initialize(ShardId shard, None, None)) session)
    reply (status "initialize")

    let batch = DaemonMessage.ProcessRecords(records, Some 0L)
    DaemonSession.encodeInto (fun length -> GC.AllocateUninitializedArray<byte> length) options batch |> ignore
    open' batch
    reply """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null}"""

    reply (
        sprintf
            """{"action":"checkpoint","sequenceNumber":"%s","subSequenceNumber":0}"""
            records[1].SequenceNumber.Value
    )

    reply (status "processRecords")
    session <- fst (DaemonSession.send DaemonMessage.ShardEnded session)
    reply """{"action":"checkpoint","sequenceNumber":"SHARD_END","subSequenceNumber":null}"""
    reply (status "shardEnded")
    session

let private started =
    lazy
        Task.Run(fun () ->
            // Only a head start: a rehearsal that failed leaves the real session's first calls to compile.
            try
                rehearse () |> ignore
            with _ ->
                ())

/// Starts the rehearsal on the thread pool, once per process; the run does not wait for it.
let start () = started.Force() |> ignore
