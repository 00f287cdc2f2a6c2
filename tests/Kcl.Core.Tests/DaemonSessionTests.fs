module Kcl.Core.Tests.DaemonSessionTests

open System
open System.Text
open FsCheck
open FsCheck.FSharp
open Kcl.Core
open Kcl.Core.Tests.Harness
open Xunit

type private Session = DaemonSession.Session

let private A = "49590338271490256608559692538361571095921575989136588898"
let private B = "49590338271490256608559692538362780021741190618311294978"
let private C = "49590338271490256608559692538363988947560805247485001730"
let private shard = ShardId "shardId-000000000000"

let private position sequence sub =
    {
        SequenceNumber = SequenceNumber.parse sequence
        SubSequenceNumber = sub
    }

let private record sequence sub =
    {
        Data = ReadOnlyMemory [| 1uy |]
        PartitionKey = "pk"
        SequenceNumber = SequenceNumber.parse sequence
        SubSequenceNumber = sub
        ApproximateArrivalTimestamp = None
    }

let private initialize sequence sub =
    DaemonMessage.Initialize(shard, Some(SequenceNumber.parse sequence), Some sub)

let private batch (records: (string * int64) list) =
    DaemonMessage.ProcessRecords(records |> List.map (fun (s, sub) -> record s sub) |> Array.ofList, Some 0L)

let private utf8 (text: string) = Encoding.UTF8.GetBytes text
let private line (text: string) = utf8 (text + "\n")

let private sendAll messages (session: Session) =
    (session, messages)
    ||> List.fold (fun session message -> fst (DaemonSession.send message session))

let private receiveAll lines (session: Session) =
    (session, lines)
    ||> List.fold (fun session text -> fst (DaemonSession.receive text session))

let private fresh = DaemonSession.create (SessionOptions.Create shard)

let private withFaults faults =
    DaemonSession.create
        { SessionOptions.Create shard with
            Faults = faults
        }

let private status action =
    sprintf """{"action":"status","responseFor":"%s"}""" action

let private checkpointLine (sequence: string option) (sub: int64 option) =
    let sequence =
        sequence |> Option.map (sprintf "\"%s\"") |> Option.defaultValue "null"

    let sub = sub |> Option.map string |> Option.defaultValue "null"
    sprintf """{"action":"checkpoint","sequenceNumber":%s,"subSequenceNumber":%s}""" sequence sub

/// Sends a checkpoint line and returns the session and the reply's error (`None` on success); fails without a reply.
let private checkpointAt sequence sub (session: Session) =
    let session, outcome = DaemonSession.receive (checkpointLine sequence sub) session

    match outcome.Reply with
    | Some(DaemonMessage.CheckpointReply(_, _, error)) -> session, error
    | other -> failwithf "expected a checkpoint reply, got %A" other

let private kinds (findings: Finding list) = findings |> List.map _.Kind

// ---- transcripts, played from the daemon's side ------------------------------------------------------------------

// The scenario each transcript needs from the daemon: T07's throttled first attempt, T08's lease at A, T16's lost lease.
let private optionsFor id shardId =
    let options = SessionOptions.Create shardId

    match id with
    | "T07" ->
        { options with
            Faults = [ FaultRule.Times(CheckpointError.Throttling, 1, 1) ]
        }
    | "T08" ->
        { options with
            Checkpoint = Some(position A 0L)
        }
    | "T16" ->
        { options with
            Faults = [ FaultRule.Times(CheckpointError.Shutdown, 1, 1) ]
        }
    | _ -> options

let private replay id (exchanges: Exchange list) =
    let shardId =
        exchanges
        |> List.tryPick (function
            | Daemon text ->
                match Json.decodeDaemonLine text with
                | Ok(DaemonMessage.Initialize(shardId, _, _)) -> Some shardId
                | _ -> None
            | _ -> None)
        |> Option.defaultValue shard

    let mutable session = DaemonSession.create (optionsFor id shardId)
    let mutable pendingReply: byte[] option = None

    for exchange in exchanges do
        match exchange with
        | Daemon text ->
            match Json.decodeDaemonLine text with
            | Ok(DaemonMessage.CheckpointReply _) ->
                // The daemon's reply must already have been produced by `receive`, byte for byte.
                Assert.Equal<byte[]>(
                    line text,
                    pendingReply |> Option.defaultWith (fun () -> failwithf "%s: no reply" id)
                )

                pendingReply <- None
            | Ok message ->
                Assert.Equal(Next.SendAction, DaemonSession.nextStep session)
                let next, bytes = DaemonSession.send message session
                Assert.Equal<byte[]>(line text, bytes)
                session <- next
            | Error error -> failwithf "%s: %s" id (error.Describe())
        | Child text ->
            Assert.Equal(Next.ReadLine, DaemonSession.nextStep session)
            let next, outcome = DaemonSession.receive text session
            Assert.True(pendingReply.IsNone, sprintf "%s: a reply was not in the transcript" id)

            pendingReply <-
                if outcome.ReplyBytes.Length = 0 then
                    None
                else
                    Some outcome.ReplyBytes

            session <- next
        | EndOfInput -> Assert.Equal(Next.CloseStdin, DaemonSession.nextStep session)

    Assert.True(pendingReply.IsNone, sprintf "%s: a reply was not in the transcript" id)
    Assert.Empty(session.Findings)
    Assert.Equal(None, session.OpenAction)
    session

[<Fact>]
let ``every transcript plays byte for byte from the daemon's side, with no finding`` () =
    for KeyValue(id, sessions) in transcripts do
        for exchanges in sessions do
            replay id exchanges |> ignore

[<Fact>]
let ``the transcripts' checkpoints land where the daemon would store them`` () =
    let only id = replay id transcripts[id].Head

    Assert.Equal(Some(position B 0L), (only "T04").Checkpoint)
    Assert.Equal(Some(position C 0L), (only "T05").Checkpoint)
    Assert.Equal<int list>([ 1; 2 ], (only "T06").Checkpoints |> List.map _.Request)

    Assert.Equal<CheckpointRecord list>(
        [
            {
                Request = 2
                Action = "processRecords"
                Position = position C 0L
                Changed = true
            }
        ],
        (only "T07").Checkpoints
    )

    Assert.Equal(Some(position A 0L), (only "T08").Checkpoint)
    Assert.True((only "T12").ShardEndCheckpointed)
    Assert.True((only "T13").ShardEndCheckpointed)
    Assert.True((only "T17").ShardEndCheckpointed)
    Assert.Equal(Next.SendLeaseLost, DaemonSession.nextStep (only "T16"))
    Assert.True((only "T16").LeaseLost)
    let complete = only "T20"
    Assert.Equal<string list>([ "initialize"; "processRecords"; "processRecords"; "shardEnded" ], complete.Statuses)
    Assert.Equal(2, complete.RecordsDelivered)
    Assert.Equal<string list>([ "processRecords"; "shardEnded" ], complete.Checkpoints |> List.map _.Action)
    Assert.Equal(Some(position B 0L), complete.SequenceNumberAtShardEnd)

[<Fact>]
let ``actions go out in the configured charset and line separator`` () =
    let options =
        { SessionOptions.Create shard with
            Charset = Json.DaemonCharset.PosixAscii
            LineSeparator = "\r\n"
        }

    let message =
        DaemonMessage.ProcessRecords(
            [|
                { record A 0L with
                    PartitionKey = "ключ-ü"
                }
            |],
            None
        )

    let _, bytes = DaemonSession.send message (DaemonSession.create options)
    let text = Encoding.ASCII.GetString bytes
    Assert.EndsWith("\r\n", text)
    Assert.Contains("\"partitionKey\":\"????-?\"", text)

// ---- the "Negative cases" table of TRANSCRIPTS.md ----------------------------------------------------------------

let private duringInitialize = fresh |> sendAll [ initialize "TRIM_HORIZON" 0L ]

let private isSkip (outcome: Outcome) =
    match outcome.Handling, outcome.Findings with
    | LineHandling.Skipped _,
      [ {
            Kind = FindingKind.UnparseableLine _
            Severity = FindingSeverity.Violation
        } ] -> true
    | _ -> false

[<Fact>]
let ``a status with an extra key is skipped, and the action stays open: a hang`` () =
    let session, outcome =
        DaemonSession.receive """{"action":"status","responseFor":"initialize","extra":1}""" duringInitialize

    Assert.True(isSkip outcome)
    Assert.Equal(Some "initialize", session.OpenAction)
    Assert.Equal(Next.ReadLine, DaemonSession.nextStep session)

    Assert.Equal(
        "the daemon cannot parse this line (in \"status\", the field \"extra\" is invalid: not a property of this message; the daemon would skip the line), so it skips it (\"Skipping unexpected line on STDOUT\") and keeps waiting for the status of initialize: if the line was meant as the status, the shard hangs",
        outcome.Findings.Head.Message
    )

[<Fact>]
let ``the legacy checkpoint field, a capitalised action, a missing action and non-objects are skipped`` () =
    for text in
        [
            """{"action":"checkpoint","checkpoint":"123"}"""
            """{"action":"Status","responseFor":"initialize"}"""
            """{"Action":"status","responseFor":"initialize"}"""
            """{"responseFor":"initialize"}"""
            """{"action":"prepareCheckpoint"}"""
            "hello"
            "[1,2]"
            "{'action':'status'}"
            "\uFEFF" + status "initialize"
            """{"action":"checkpoint","sequenceNumber":{"a":1}}"""
            """{"action":"checkpoint","sequenceNumber":"1","subSequenceNumber":99999999999999999999}"""
        ] do
        let session, outcome = DaemonSession.receive text duringInitialize
        Assert.True(isSkip outcome, text)
        Assert.Equal(Some "initialize", session.OpenAction)
        Assert.Equal(Some text, outcome.Findings.Head.Line)

[<Fact>]
let ``trailing text after the object and any key order are accepted`` () =
    for text in
        [
            status "initialize" + " trailing"
            status "initialize" + """{"action":"status","responseFor":"x"}"""
            """{"responseFor":"initialize","action":"status"}"""
            """  { "action" : "status" , "responseFor" : "initialize" }  """
        ] do
        let session, outcome = DaemonSession.receive text duringInitialize
        Assert.Equal(LineHandling.StatusAccepted "initialize", outcome.Handling)
        Assert.Empty(outcome.Findings)
        Assert.Equal(Next.SendAction, DaemonSession.nextStep session)

[<Fact>]
let ``the literal null is a fatal violation: the daemon exits`` () =
    let session, outcome = DaemonSession.receive "null" duringInitialize
    Assert.Equal(LineHandling.Fatal, outcome.Handling)
    Assert.Equal<FindingKind list>([ FindingKind.NullLine ], kinds outcome.Findings)
    Assert.True(session.DaemonExited)
    Assert.Equal(Next.Abort, DaemonSession.nextStep session)

    Assert.Equal(
        "the line is the JSON literal null: the daemon's Optional.of(null) throws a NullPointerException, so it stops the child and exits with code 1, ending every shard",
        outcome.Findings.Head.Message
    )

    let after, drained = DaemonSession.receive (status "initialize") session
    Assert.Equal(LineHandling.Drained, drained.Handling)
    Assert.Empty(drained.Findings)
    Assert.Equal(1, after.Findings.Length)
    Assert.True(DaemonSession.trySend DaemonMessage.LeaseLost after |> Result.isError)

[<Fact>]
let ``a wrong responseFor is a fatal violation naming both actions`` () =
    let session = fresh |> sendAll [ batch [ A, 0L ] ]
    let session, outcome = DaemonSession.receive (status "initialize") session
    Assert.Equal(LineHandling.StatusRejected(Some "initialize"), outcome.Handling)

    let found = outcome.Findings.Head
    Assert.Equal(FindingKind.WrongResponseFor("processRecords", Some "initialize"), found.Kind)
    Assert.Equal(FindingSeverity.Violation, found.Severity)
    Assert.Equal(shard, found.ShardId)
    Assert.Equal(Some "processRecords", found.Action)
    Assert.Equal(Some(status "initialize"), found.Line)

    Assert.Equal(
        "wrong responseFor: processRecords was answered with \"initialize\", so validateStatusMessage fails: the daemon closes the child's stdin, waits for it to exit and calls System.exit(1), ending every shard",
        found.Message
    )

    Assert.Equal(Next.Abort, DaemonSession.nextStep session)
    Assert.Empty(session.Statuses)

[<Fact>]
let ``responseFor is case-sensitive, and a null, missing or numeric one fails validation too`` () =
    let session = fresh |> sendAll [ batch [ A, 0L ] ]

    for text, actual in
        [
            status "ProcessRecords", Some "ProcessRecords"
            """{"action":"status","responseFor":null}""", None
            """{"action":"status"}""", None
            """{"action":"status","responseFor":5}""", Some "5"
        ] do
        let after, outcome = DaemonSession.receive text session

        Assert.Equal<FindingKind list>(
            [ FindingKind.WrongResponseFor("processRecords", actual) ],
            kinds outcome.Findings
        )

        Assert.True(after.DaemonExited, text)

[<Fact>]
let ``a wrong responseFor for shutdownRequested is only a warning, and the action closes`` () =
    let session = fresh |> sendAll [ DaemonMessage.ShutdownRequested ]
    let session, outcome = DaemonSession.receive (status "shutdown") session
    Assert.Equal(FindingSeverity.Warning, outcome.Findings.Head.Severity)
    Assert.Empty(session.Violations)
    Assert.Equal(1, session.Warnings.Length)
    Assert.Equal(Next.SendAction, DaemonSession.nextStep session)

    Assert.Equal(
        "wrong responseFor: shutdownRequested was answered with \"shutdown\"; for shutdownRequested the daemon only logs \"Child process failed to complete shutdown notification.\" and carries on",
        outcome.Findings.Head.Message
    )

[<Fact>]
let ``a checkpoint during initialize or leaseLost gets InvalidStateException and is a violation`` () =
    for opening in
        [
            initialize "TRIM_HORIZON" 0L
            DaemonMessage.LeaseLost
            DaemonMessage.Shutdown ShutdownReason.Zombie
            DaemonMessage.Shutdown ShutdownReason.LeaseLost
        ] do
        let session = fresh |> sendAll [ opening ]

        let session, outcome =
            DaemonSession.receive """{"action":"checkpoint","sequenceNumber":"1"}""" session

        Assert.Equal<byte[]>(
            line
                """{"action":"checkpoint","sequenceNumber":"1","subSequenceNumber":null,"error":"InvalidStateException"}""",
            outcome.ReplyBytes
        )

        Assert.Equal<FindingKind list>([ FindingKind.CheckpointNotAllowed ], kinds outcome.Findings)
        Assert.Equal(Some opening.Action, session.OpenAction)
        Assert.Empty(session.Checkpoints)

    let _, outcome = DaemonSession.receive (checkpointLine None None) duringInitialize

    Assert.Equal(
        "a checkpoint where none is allowed: initialize has no checkpointer, so the daemon answers InvalidStateException (\"no checkpointer was provided\") and keeps waiting for the status",
        outcome.Findings.Head.Message
    )

[<Fact>]
let ``a numeric sequenceNumber and a string subSequenceNumber are coerced and accepted`` () =
    let session = fresh |> sendAll [ batch [ "12345", 0L ] ]

    let session, outcome =
        DaemonSession.receive """{"action":"checkpoint","sequenceNumber":12345,"subSequenceNumber":"0"}""" session

    Assert.Equal<byte[]>(
        line """{"action":"checkpoint","sequenceNumber":"12345","subSequenceNumber":0,"error":null}""",
        outcome.ReplyBytes
    )

    Assert.Equal(Some(position "12345" 0L), session.Checkpoint)
    Assert.Empty(session.Findings)

[<Fact>]
let ``a sequenceNumber that is not one is answered with IllegalArgumentException, echoed as Jackson read it`` () =
    let session = fresh |> sendAll [ batch [ A, 0L ] ]

    for text, echo in
        [
            """{"action":"checkpoint","sequenceNumber":true}""", "\"true\""
            """{"action":"checkpoint","sequenceNumber":"abc","subSequenceNumber":"2"}""", "\"abc\""
            """{"action":"checkpoint","sequenceNumber":"","error":"ignored"}""", "\"\""
        ] do
        let _, outcome = DaemonSession.receive text session
        Assert.Equal(LineHandling.CheckpointAnswered(Some CheckpointError.IllegalArgument), outcome.Handling)

        Assert.StartsWith(
            sprintf """{"action":"checkpoint","sequenceNumber":%s,""" echo,
            Encoding.UTF8.GetString outcome.ReplyBytes
        )

        Assert.Empty(outcome.Findings)

[<Fact>]
let ``the reply echoes a subSequenceNumber sent with a null sequenceNumber`` () =
    let session = fresh |> sendAll [ batch [ A, 0L ] ]
    let _, outcome = DaemonSession.receive (checkpointLine None (Some 5L)) session

    Assert.Equal<byte[]>(
        line """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":5,"error":null}""",
        outcome.ReplyBytes
    )

// ---- lines that are not messages ---------------------------------------------------------------------------------

[<Fact>]
let ``empty and whitespace-only lines are skipped without a finding`` () =
    let session, empty = DaemonSession.receive "" duringInitialize
    let session, blank = DaemonSession.receive " \t " session
    Assert.Equal(LineHandling.Empty, empty.Handling)
    Assert.Equal(LineHandling.Blank, blank.Handling)
    Assert.Empty(session.Findings)
    Assert.Equal<string list>([ ""; " \t " ], session.Lines |> List.map _.Text)
    Assert.Equal(Some "initialize", session.OpenAction)

[<Fact>]
let ``a daemon-side message written by the child is ignored silently`` () =
    for text in
        [
            """{"action":"initialize","shardId":"x","sequenceNumber":null,"subSequenceNumber":null}"""
            """{"action":"leaseLost"}"""
            """{"action":"shutdown","reason":"TERMINATE"}"""
        ] do
        let session, outcome = DaemonSession.receive text duringInitialize
        Assert.True(outcome.Handling.IsDaemonSideMessage, text)
        Assert.Empty(session.Findings)
        Assert.Equal(Some "initialize", session.OpenAction)

[<Fact>]
let ``every line is kept in order with the action it came in`` () =
    let session =
        fresh
        |> sendAll [ batch [ A, 0L ] ]
        |> receiveAll
            [
                ""
                checkpointLine None None
                status "processRecords"
                status "processRecords"
            ]

    Assert.Equal<string option list>(
        [ Some "processRecords"; Some "processRecords"; Some "processRecords"; None ],
        session.Lines |> List.map _.Action
    )

    Assert.Equal<LineHandling list>(
        [
            LineHandling.Empty
            LineHandling.CheckpointAnswered None
            LineHandling.StatusAccepted "processRecords"
            LineHandling.StatusRejected(Some "processRecords")
        ],
        session.Lines |> List.map _.Handling
    )

// ---- lines out of turn, and the driver's findings ----------------------------------------------------------------

[<Fact>]
let ``a checkpoint after the status is a violation and gets no reply`` () =
    let session =
        fresh |> sendAll [ batch [ A, 0L ] ] |> receiveAll [ status "processRecords" ]

    let session, outcome = DaemonSession.receive (checkpointLine None None) session
    Assert.Equal(LineHandling.CheckpointUnread, outcome.Handling)
    Assert.Equal(None, outcome.Reply)
    Assert.Empty(outcome.ReplyBytes)
    Assert.Equal(0, session.CheckpointRequests)
    Assert.Equal<FindingKind list>([ FindingKind.CheckpointAfterStatus ], kinds session.Violations)
    Assert.Equal(Some "processRecords", session.Violations.Head.Action)

    Assert.Equal(
        "a checkpoint sent after the status: no action is open, so the daemon leaves it unread until the next action and then answers it against that action's checkpointer",
        outcome.Findings.Head.Message
    )

[<Fact>]
let ``two statuses for one action, and a status before any action, are violations`` () =
    let twice =
        fresh
        |> sendAll [ batch [ A, 0L ] ]
        |> receiveAll [ status "processRecords"; status "processRecords" ]

    Assert.Equal<FindingKind list>([ FindingKind.StatusWithoutAction(Some "processRecords") ], kinds twice.Violations)
    Assert.Equal<string list>([ "processRecords" ], twice.Statuses)

    Assert.Equal(
        "two statuses for one action (processRecords): the daemon reads the second as the answer to the next action, which fails validation unless that action has the same name, and then exits with code 1",
        twice.Violations.Head.Message
    )

    let early = fresh |> receiveAll [ status "initialize" ]

    Assert.Equal(
        "a status with no action open: the daemon reads it as the answer to the next action, which fails validation, and then exits with code 1",
        early.Violations.Head.Message
    )

    Assert.Equal(None, early.Violations.Head.Action)

[<Fact>]
let ``shardEnded answered without SHARD_END is a violation: the shard would be wedged`` () =
    let session =
        fresh
        |> sendAll [ initialize "TRIM_HORIZON" 0L ]
        |> receiveAll [ status "initialize" ]
        |> sendAll [ batch [ A, 0L; B, 0L ] ]
        |> receiveAll [ status "processRecords" ]

    let session =
        session
        |> sendAll [ DaemonMessage.ShardEnded ]
        |> receiveAll [ checkpointLine (Some A) (Some 0L); status "shardEnded" ]

    Assert.Equal<FindingKind list>([ FindingKind.MissingShardEndCheckpoint ], kinds session.Violations)

    Assert.Equal(
        sprintf
            "missing SHARD_END checkpoint: shardEnded was answered while the lease's checkpoint is %s/0, so ShutdownTask throws and retries forever against the closed child: the shard is wedged and its child shards never start"
            A,
        session.Violations.Head.Message
    )

    Assert.Equal(Next.CloseStdin, DaemonSession.nextStep session)

    for reason in [ ShutdownReason.Terminate; ShutdownReason.ShardEnd ] do
        let legacy =
            fresh
            |> sendAll [ DaemonMessage.Shutdown reason ]
            |> receiveAll [ status "shutdown" ]

        Assert.Equal<FindingKind list>([ FindingKind.MissingShardEndCheckpoint ], kinds legacy.Violations)

[<Fact>]
let ``the driver's failures are recorded with the shard and the action`` () =
    let during = fresh |> sendAll [ batch [ A, 0L ] ]
    let timedOut = DaemonSession.recordDriverFailure DriverFailure.TimedOut during
    let found = timedOut.Violations.Head
    Assert.Equal(FindingKind.TimedOut, found.Kind)
    Assert.Equal(Some "processRecords", found.Action)
    Assert.Equal(shard, found.ShardId)
    Assert.Equal(None, found.Line)

    Assert.Equal(
        "timed out waiting for a message during processRecords: with timeoutInSeconds set the daemon halts the JVM (Runtime.halt(1)), ending every shard; without it, it waits forever",
        found.Message
    )

    Assert.Equal(Next.Abort, DaemonSession.nextStep timedOut)

    let exited =
        DaemonSession.recordDriverFailure (DriverFailure.ChildExited(Some 3)) during

    Assert.Equal(
        "the child exited with code 3 during processRecords: the daemon reads end of input while waiting for the status and exits with code 1, ending every shard",
        exited.Violations.Head.Message
    )

    let ended =
        fresh
        |> sendAll [ DaemonMessage.LeaseLost ]
        |> receiveAll [ status "leaseLost" ]

    let stuck =
        DaemonSession.recordDriverFailure DriverFailure.NoExitAfterEndOfInput ended

    Assert.Equal(Some "leaseLost", stuck.Violations.Head.Action)

    Assert.Equal(
        "the child did not exit after stdin EOF: the daemon waits in process.waitFor() with no timeout, so this shard's shutdown blocks forever",
        stuck.Violations.Head.Message
    )

    Assert.Equal(Next.CloseStdin, DaemonSession.nextStep stuck)

// ---- sending ------------------------------------------------------------------------------------------------------

let private refused message session =
    match DaemonSession.trySend message session with
    | Error reason ->
        // What a driver asks before it writes a batch refuses for the same reason.
        Assert.Equal(Error reason, DaemonSession.canOpen message session)
        reason
    | Ok _ -> failwithf "%A was sent" message

[<Fact>]
let ``actions the real daemon would never send are refused with the reason`` () =
    Assert.Equal(
        "cannot send leaseLost: processRecords still awaits its status, and the daemon has exactly one outstanding action per child (PROTOCOL.md §4.1)",
        refused DaemonMessage.LeaseLost (fresh |> sendAll [ batch [] ])
    )

    Assert.Equal(
        "a checkpoint reply is not an action: the session writes replies itself, from receive",
        refused (DaemonMessage.CheckpointReply(None, None, None)) fresh
    )

    let initialized =
        fresh
        |> sendAll [ initialize "TRIM_HORIZON" 0L ]
        |> receiveAll [ status "initialize" ]

    Assert.Equal(
        "cannot send initialize: it is only ever the first action of a child",
        refused (initialize "LATEST" 0L) initialized
    )

    Assert.Equal(
        "cannot send initialize for shardId-000000000009: this session serves shardId-000000000000",
        refused (DaemonMessage.Initialize(ShardId "shardId-000000000009", None, None)) fresh
    )

    let notified =
        fresh
        |> sendAll [ DaemonMessage.ShutdownRequested ]
        |> receiveAll [ status "shutdownRequested" ]

    Assert.Equal(
        "cannot send processRecords after shutdownRequested: the daemon sends only leaseLost or shardEnded then (PROTOCOL.md §4.1)",
        refused (batch []) notified
    )

    let ended =
        fresh
        |> sendAll [ DaemonMessage.LeaseLost ]
        |> receiveAll [ status "leaseLost" ]

    Assert.Equal(
        "cannot send processRecords: the final action (leaseLost) has been answered, so the daemon has closed the child's stdin",
        refused (batch []) ended
    )

    Assert.Throws<InvalidOperationException>(fun () -> DaemonSession.send (batch []) ended |> ignore)
    |> ignore

[<Fact>]
let ``the largest permitted after a batch is the first largest of the last one and the batch's records`` () =
    // Ties between equal numbers written differently (leading zeros) decide which text the daemon keeps.
    let sequences = [ "7"; "007"; "12"; "0012"; A; B; "0" + B; C ]
    let entry = Gen.zip (Gen.elements sequences) (Gen.choose (0, 2) |> Gen.map int64)
    let cases = Gen.zip (Gen.elements ("TRIM_HORIZON" :: sequences)) (Gen.listOf entry)

    let property =
        Prop.forAll (Arb.fromGen cases) (fun (start, records) ->
            let session =
                fresh
                |> sendAll [ initialize start 0L ]
                |> receiveAll [ status "initialize" ]
                |> sendAll [ batch records ]

            // The daemon's own fold, a position per record, the earlier kept on a tie.
            let expected =
                (position start 0L, records)
                ||> List.fold (fun largest (sequence, sub) ->
                    let next = position sequence sub
                    if DaemonRules.compareExtended largest next >= 0 then largest else next)

            let largest = session.LargestPermitted.Value
            largest.SequenceNumber.Value = expected.SequenceNumber.Value
            && largest.SubSequenceNumber = expected.SubSequenceNumber)

    Generators.check 500 property

[<Fact>]
let ``the session tracks the checkpointer's bounds as the daemon sends`` () =
    let session = fresh |> sendAll [ initialize A 3L ]
    Assert.Equal(Some(position A 3L), session.Checkpoint)
    Assert.Equal(Some(position A 3L), session.LargestPermitted)

    let session =
        session
        |> receiveAll [ status "initialize" ]
        |> sendAll [ batch [ C, 0L; B, 1L ] ]

    Assert.Equal(Some(position C 0L), session.LargestPermitted)

    let session =
        session |> receiveAll [ status "processRecords" ] |> sendAll [ batch [] ]

    Assert.Equal(Some(position C 0L), session.LargestPermitted)

    let session =
        session
        |> receiveAll [ status "processRecords" ]
        |> sendAll [ DaemonMessage.ShardEnded ]

    Assert.Equal(Some(position C 0L), session.SequenceNumberAtShardEnd)
    Assert.Equal(Some(position "SHARD_END" 0L), session.LargestPermitted)
    Assert.Equal(2, session.RecordsDelivered)

    let unknown = fresh |> sendAll [ DaemonMessage.Initialize(shard, None, None) ]
    Assert.Equal(None, unknown.Checkpoint)

// ---- the checkpointer's range rules ------------------------------------------------------------------------------

/// A session resumed at A/2 (by initialize), with records up to C/0 delivered and processRecords open.
let private resumed =
    fresh
    |> sendAll [ initialize A 2L ]
    |> receiveAll [ status "initialize" ]
    |> sendAll [ batch [ B, 0L; C, 0L ] ]

let private errorAt sequence sub session = snd (checkpointAt sequence sub session)

[<Fact>]
let ``a checkpoint below the last one or above the largest delivered is IllegalArgumentException`` () =
    Assert.Equal(Some CheckpointError.IllegalArgument, errorAt (Some A) (Some 1L) resumed)
    Assert.Equal(Some CheckpointError.IllegalArgument, errorAt (Some "12345") None resumed)
    Assert.Equal(Some CheckpointError.IllegalArgument, errorAt (Some C) (Some 1L) resumed)
    Assert.Equal(Some CheckpointError.IllegalArgument, errorAt (Some "SHARD_END") None resumed)
    Assert.Equal(Some CheckpointError.IllegalArgument, errorAt (Some B) (Some -1L) resumed)
    let session, _ = checkpointAt (Some A) (Some 3L) resumed
    Assert.Equal(Some(position A 3L), session.Checkpoint)
    let session, error = checkpointAt (Some C) None session
    Assert.Equal(None, error)
    Assert.Equal(Some(position C 0L), session.Checkpoint)
    Assert.Empty(session.Findings)

[<Fact>]
let ``a checkpoint equal to the current one is a silent success that changes nothing`` () =
    let session, error = checkpointAt (Some A) (Some 2L) resumed
    Assert.Equal(None, error)

    Assert.Equal<CheckpointRecord list>(
        [
            {
                Request = 1
                Action = "processRecords"
                Position = position A 2L
                Changed = false
            }
        ],
        session.Checkpoints
    )

[<Fact>]
let ``digit strings compare numerically whatever their length and leading zeros`` () =
    let session =
        fresh
        |> sendAll [ initialize "99" 0L ]
        |> receiveAll [ status "initialize" ]
        |> sendAll [ batch [ "1000", 0L ] ]

    Assert.Equal(Some CheckpointError.IllegalArgument, errorAt (Some "98") None session)
    Assert.Equal(Some CheckpointError.IllegalArgument, errorAt (Some "1001") None session)
    Assert.Equal(None, errorAt (Some "100") None session)
    Assert.Equal(None, errorAt (Some "0000999") None session)
    Assert.Equal(Some CheckpointError.IllegalArgument, errorAt (Some "00001001") None session)

[<Fact>]
let ``digit strings compare as the numbers they spell, as BigInteger compares them`` () =
    let zeros = Gen.choose (0, 3) |> Gen.map (fun n -> String('0', n))

    let pair =
        gen {
            let! a = Generators.digitString
            let! last = Gen.elements [ '0' .. '9' ]
            // Two independent numbers seldom have the same length or value: the same one, or one that may differ in
            // its last digit, come as often.
            let! b =
                Gen.frequency
                    [
                        2, Generators.digitString
                        1, Gen.constant a
                        1, Gen.constant (a.Substring(0, a.Length - 1) + string last)
                    ]

            let! zerosA = zeros
            let! zerosB = zeros
            return zerosA + a, zerosB + b
        }

    Prop.forAll (Arb.fromGen pair) (fun (a, b) ->
        DaemonRules.compareDigits a b = sign (Numerics.BigInteger.Parse(a).CompareTo(Numerics.BigInteger.Parse b)))
    |> Generators.check 1000

[<Fact>]
let ``the other sentinels sort below every digit string and SHARD_END above all`` () =
    let ordered position1 position2 =
        DaemonRules.compareExtended position1 position2 < 0

    Assert.True(ordered (position "TRIM_HORIZON" 0L) (position "0" 0L))
    Assert.True(ordered (position "AT_TIMESTAMP" 0L) (position "1" 0L))
    Assert.True(ordered (position C 5L) (position "SHARD_END" 0L))
    Assert.True(ordered (position "2" 0L) (position "10" 0L))
    Assert.True(ordered (position "7" 1L) (position "007" 2L))
    Assert.Equal(0, DaemonRules.compareExtended (position "LATEST" 0L) (position "TRIM_HORIZON" 0L))
    Assert.Equal(0, DaemonRules.compareExtended (position "7" 0L) (position "007" 0L))

    // From a TRIM_HORIZON lease, any delivered record may be checkpointed.
    let session =
        fresh
        |> sendAll [ initialize "TRIM_HORIZON" 0L ]
        |> receiveAll [ status "initialize" ]
        |> sendAll [ batch [ "5", 0L ] ]

    Assert.Equal(None, errorAt (Some "0") None session)

[<Fact>]
let ``in shardEnded, no argument, SHARD_END and the last delivered record all record SHARD_END`` () =
    let atShardEnd =
        resumed
        |> receiveAll [ status "processRecords" ]
        |> sendAll [ DaemonMessage.ShardEnded ]

    for sequence, sub in [ None, None; Some "SHARD_END", None; Some C, Some 0L; Some C, None ] do
        let session, error = checkpointAt sequence sub atShardEnd
        Assert.Equal(None, error)
        Assert.True(session.ShardEndCheckpointed, sprintf "%A" sequence)
        let session = session |> receiveAll [ status "shardEnded" ]
        Assert.Empty(session.Findings)
        Assert.Equal(Next.CloseStdin, DaemonSession.nextStep session)

    let session, error = checkpointAt (Some B) None atShardEnd
    Assert.Equal(None, error)
    Assert.Equal(Some(position B 0L), session.Checkpoint)
    Assert.False(session.ShardEndCheckpointed)
    let session, error = checkpointAt (Some "SHARD_END") (Some 1L) session
    Assert.Equal(None, error)
    Assert.False(session.ShardEndCheckpointed)

// ---- fault injection ---------------------------------------------------------------------------------------------

let private errorsOf n (session: Session) =
    ((session, []), [ 1..n ])
    ||> List.fold (fun (session, errors) _ ->
        let session, error = checkpointAt None None session
        session, error :: errors)
    |> fun (session, errors) -> session, List.rev errors

let private delivering faults =
    withFaults faults |> sendAll [ batch [ A, 0L ] ]

[<Fact>]
let ``a fault rule fails the requests in its window, counted from From`` () =
    let session, errors =
        errorsOf 5 (delivering [ FaultRule.Times(CheckpointError.Throttling, 2, 2) ])

    let throttled = Some CheckpointError.Throttling
    Assert.Equal<CheckpointError option list>([ None; throttled; throttled; None; None ], errors)
    Assert.Equal<int list>([ 1; 4; 5 ], session.Checkpoints |> List.map _.Request)
    Assert.Equal(5, session.CheckpointRequests)
    Assert.Empty(session.Findings)

[<Fact>]
let ``a rule with no count fails every request from From on, and the first rule covering a request wins`` () =
    let rules =
        [
            FaultRule.Times(CheckpointError.Other "NullPointerException", 2, 1)
            FaultRule.Always(CheckpointError.Dependency, 2)
        ]

    let _, errors = errorsOf 5 (delivering rules)

    Assert.Equal<CheckpointError option list>(
        [ None; Some(CheckpointError.Other "NullPointerException") ]
        @ List.replicate 3 (Some CheckpointError.Dependency),
        errors
    )

    let session, outcome =
        DaemonSession.receive
            (checkpointLine (Some A) None)
            (delivering [ FaultRule.Always(CheckpointError.Dependency, 1) ])

    Assert.Equal<byte[]>(
        line (
            sprintf
                """{"action":"checkpoint","sequenceNumber":"%s","subSequenceNumber":null,"error":"KinesisClientLibDependencyException"}"""
                A
        ),
        outcome.ReplyBytes
    )

    Assert.Empty(session.Checkpoints)

[<Fact>]
let ``an injected ShutdownException loses the lease: later checkpoints fail and leaseLost comes next`` () =
    let session, errors =
        errorsOf 2 (delivering [ FaultRule.Times(CheckpointError.Shutdown, 1, 1) ])

    Assert.Equal<CheckpointError option list>([ Some CheckpointError.Shutdown; Some CheckpointError.Shutdown ], errors)
    Assert.True(session.LeaseLost)
    Assert.Equal(Next.ReadLine, DaemonSession.nextStep session)
    let session = session |> receiveAll [ status "processRecords" ]
    Assert.Equal(Next.SendLeaseLost, DaemonSession.nextStep session)

    Assert.Equal(
        "cannot send shardEnded: the lease was lost (a ShutdownException was replied), so the daemon's next action for this child is leaseLost",
        refused DaemonMessage.ShardEnded session
    )

    let session =
        session
        |> sendAll [ DaemonMessage.LeaseLost ]
        |> receiveAll [ status "leaseLost" ]

    Assert.Equal(Next.CloseStdin, DaemonSession.nextStep session)
    Assert.Empty(session.Findings)

[<Fact>]
let ``a lease lost during shardEnded excuses the missing SHARD_END, and stdin closes after the status`` () =
    let session =
        withFaults [ FaultRule.Always(CheckpointError.Shutdown, 1) ]
        |> sendAll [ DaemonMessage.ShardEnded ]
        |> receiveAll [ checkpointLine None None; status "shardEnded" ]

    Assert.True(session.LeaseLost)
    Assert.False(session.ShardEndCheckpointed)
    Assert.Empty(session.Findings)
    Assert.Equal(Next.CloseStdin, DaemonSession.nextStep session)

// ---- properties --------------------------------------------------------------------------------------------------

/// How a generated session ends, after its batches.
type private Ending =
    | EndsLeaseLost
    | EndsShardEnded
    | NotifiedThen of shardEnds: bool
    | Legacy of reason: ShutdownReason

type private Scenario =
    {
        Batches: int list
        /// The processor's checkpoint choices, one list per action, consumed in order.
        Choices: int list list
        Ending: Ending
        Faults: FaultRule list
        BlankLines: bool
    }

let private scenario =
    gen {
        let! batches = Gen.listOf (Gen.choose (0, 4)) |> Gen.resize 6
        let! choices = Gen.listOfLength 12 (Gen.listOf (Gen.choose (0, 9)) |> Gen.resize 3)

        let! ending =
            Gen.elements
                [
                    EndsLeaseLost
                    EndsShardEnded
                    NotifiedThen false
                    NotifiedThen true
                    Legacy ShutdownReason.Terminate
                    Legacy ShutdownReason.Zombie
                    Legacy ShutdownReason.ShardEnd
                    Legacy ShutdownReason.LeaseLost
                ]

        // Retryable faults only, and fewer in a row than the library's attempts, so a correct child gets through.
        let! faults =
            Gen.optionOf (
                Gen.map3
                    (fun error from count -> FaultRule.Times(error, from, count))
                    (Gen.elements [ CheckpointError.Throttling; CheckpointError.Dependency ])
                    (Gen.choose (1, 6))
                    (Gen.choose (1, 3))
            )

        let! blank = Gen.elements [ true; false ]

        return
            {
                Batches = batches
                Choices = choices
                Ending = ending
                Faults = Option.toList faults
                BlankLines = blank
            }
    }

let private actionsOf (scenario: Scenario) =
    let mutable next = 0

    // Strictly ascending positions across the session, some of them inside a KPL aggregate.
    let nextRecord () =
        next <- next + 1
        record (sprintf "4959033827149025660855969253836%025d" (next / 3)) (int64 (next % 3))

    [
        initialize "TRIM_HORIZON" 0L
        for size in scenario.Batches do
            DaemonMessage.ProcessRecords(Array.init size (fun _ -> nextRecord ()), Some 0L)
        match scenario.Ending with
        | EndsLeaseLost -> DaemonMessage.LeaseLost
        | EndsShardEnded -> DaemonMessage.ShardEnded
        | NotifiedThen shardEnds ->
            DaemonMessage.ShutdownRequested

            if shardEnds then
                DaemonMessage.ShardEnded
            else
                DaemonMessage.LeaseLost
        | Legacy reason -> DaemonMessage.Shutdown reason
    ]

/// The processor's checkpoint targets for one callback.
let private targetsFor (callback: Lifecycle.Callback) (choices: int list) =
    choices
    |> List.choose (fun choice ->
        match callback with
        | Lifecycle.Callback.ProcessRecords(records, _) when choice > 0 && records.Length > 0 ->
            let chosen = records[(choice - 1) % records.Length]
            Some(CheckpointTarget.At(chosen.SequenceNumber, Some chosen.SubSequenceNumber))
        | Lifecycle.Callback.ShardEnded when choice % 3 = 1 -> Some(CheckpointTarget.At(SequenceNumber.shardEnd, None))
        | Lifecycle.Callback.ShardEnded when choice % 3 = 2 -> None
        | _ -> Some CheckpointTarget.LastDelivered)

/// Plays the scenario: the session as the daemon, the child's real lifecycle as the child, and a processor that
/// checkpoints as the scenario says, each effect performed synchronously (a processor awaits each checkpoint).
let private playCorrectChild (scenario: Scenario) =
    let options: Lifecycle.Options =
        {
            Retry =
                { RetryPolicy.Default with
                    FullJitter = false
                }
            OnProcessorException = ExceptionPolicy.FailFast
        }

    let mutable session =
        DaemonSession.create
            { SessionOptions.Create shard with
                Faults = scenario.Faults
            }

    let mutable child = Lifecycle.initial options
    let mutable exit = None
    let mutable request = 0
    let mutable choices = scenario.Choices

    let receive text =
        let next, outcome = DaemonSession.receive text session
        session <- next
        outcome

    let toChild (bytes: byte[]) =
        match Json.decodeDaemonLine (Encoding.UTF8.GetString(bytes).TrimEnd '\n') with
        | Ok message -> Lifecycle.Input.Received message
        | Error error -> failwith (error.Describe())

    let perform effect =
        match effect with
        | Lifecycle.Effect.Send message ->
            if scenario.BlankLines then
                receive "" |> ignore

            let outcome = receive (Json.encodeChildMessage message)

            if outcome.ReplyBytes.Length > 0 then
                [ toChild outcome.ReplyBytes ]
            else
                []
        | Lifecycle.Effect.Invoke(action, callback) ->
            let mine, rest =
                match choices with
                | head :: tail -> head, tail
                | [] -> [], []

            choices <- rest

            [
                for target in targetsFor callback mine do
                    request <- request + 1
                    Lifecycle.Input.CheckpointRequested(request, action, target)
                Lifecycle.Input.CallbackReturned action
            ]
        | Lifecycle.Effect.WaitBeforeRetry _ -> [ Lifecycle.Input.RetryDue ]
        | Lifecycle.Effect.Exit code ->
            exit <- Some code
            []
        | _ -> []

    let rec run inputs =
        match inputs with
        | [] -> ()
        | input :: rest ->
            let next, effects = Lifecycle.transition input child
            child <- next
            run (List.collect perform effects @ rest)

    for message in actionsOf scenario do
        Assert.Equal(Next.SendAction, DaemonSession.nextStep session)
        let next, bytes = DaemonSession.send message session
        session <- next
        run [ toChild bytes ]
        Assert.Equal(None, session.OpenAction)

    Assert.Equal(Next.CloseStdin, DaemonSession.nextStep session)
    run [ Lifecycle.Input.EndOfInput ]
    Assert.Equal(Some ExitCode.EndOfInput, exit)
    session

[<Fact>]
let ``a correct child, the library's own lifecycle, never causes a finding over random sessions`` () =
    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 500,
        Prop.forAll (Arb.fromGen scenario) (fun scenario ->
            let session = playCorrectChild scenario
            Assert.Empty(session.Findings)

            let sent = session.Sent |> List.map _.Action
            Assert.Equal<string list>(sent, session.Statuses)

            match List.last session.Sent with
            | DaemonMessage.ShardEnded
            | DaemonMessage.Shutdown(ShutdownReason.Terminate | ShutdownReason.ShardEnd) ->
                Assert.True(session.ShardEndCheckpointed)
            | _ -> ())
    )

let private garbage =
    let token =
        Gen.elements
            [
                "{"
                "}"
                "["
                "]"
                "\""
                ":"
                ","
                " "
                "null"
                "true"
                "1.5e400"
                "-1"
                "99999999999999999999"
                "\"action\""
                "\"status\""
                "\"checkpoint\""
                "\"responseFor\""
                "\"sequenceNumber\""
                "\"subSequenceNumber\""
                "\"error\""
                "\"initialize\""
                "\"processRecords\""
                "\\u0000"
                "\uFEFF"
                "\\"
            ]

    Gen.oneof [ Generators.unicodeString; Gen.listOf token |> Gen.map (String.concat "") ]

[<Fact>]
let ``random garbage lines and bytes never throw, and each is recorded`` () =
    let phases =
        [
            fresh
            duringInitialize
            fresh |> sendAll [ batch [ A, 0L ] ]
            fresh |> sendAll [ DaemonMessage.ShardEnded ]
            fresh |> receiveAll [ "null" ]
        ]

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 1000,
        Prop.forAll
            (Arb.fromGen (Gen.zip garbage (Gen.arrayOf (Gen.choose (0, 255) |> Gen.map byte))))
            (fun (text, bytes) ->
                for session in phases do
                    let after, outcome = DaemonSession.receive text session
                    Assert.Equal(session.Lines.Length + 1, after.Lines.Length)
                    Assert.Equal<Finding list>(session.Findings @ outcome.Findings, after.Findings)
                    let after, _ = DaemonSession.receiveBytes bytes after
                    Assert.Equal(session.Lines.Length + 2, after.Lines.Length))
    )

// ---- the bytes of a processRecords line ---------------------------------------------------------------------------

// Records of every shape the encoder has to tell apart: plain keys (its own path), keys with quotes, backslashes,
// control characters, non-ASCII and lone surrogates (the reference's path), empty data (a payload cannot be null),
// null keys, no arrival time, negative and extreme numbers, numbers of every length.
let private anyRecord =
    gen {
        let! key =
            Gen.oneof
                [
                    Gen.elements [ "pk"; "pk-1"; ""; "a b~!"; null ]
                    Gen.elements [ "q\"uote"; "back\\slash"; "tab\t"; "ключ"; "\ud800"; "😀"; "\u007f" ]
                ]

        let! data =
            Gen.oneof
                [
                    Gen.arrayOf (Gen.choose (0, 255) |> Gen.map byte) |> Gen.map ReadOnlyMemory
                    Gen.constant ReadOnlyMemory<byte>.Empty
                ]

        let! digits = Gen.choose (1, 999999)
        // Every digit count, at and beside each power of ten, for the encoder's count of a number's digits.
        let! power = Gen.choose (0, 18)
        let! beside = Gen.elements [ -1L; 0L; 1L ]
        let! sign = Gen.elements [ 1L; -1L ]

        let! sub =
            Gen.elements [ 0L; 7L; -1L; Int64.MaxValue; Int64.MinValue; sign * (pown 10L power + beside) ]

        let! arrival =
            Gen.elements
                [
                    None
                    Some(DateTimeOffset.FromUnixTimeMilliseconds 0L)
                    Some(DateTimeOffset.FromUnixTimeMilliseconds 1700000000123L)
                    Some DateTimeOffset.MinValue
                ]

        return
            {
                Data = data
                PartitionKey = key
                SequenceNumber = SequenceNumber.parse (A + string digits)
                SubSequenceNumber = sub
                ApproximateArrivalTimestamp = arrival
            }
    }

[<Fact>]
let ``a processRecords line is the reference encoding plus the separator, whatever the records and charset`` () =
    let batch =
        gen {
            let! records = Gen.arrayOf anyRecord
            let! behind = Gen.elements [ None; Some 0L; Some 12345L; Some -1L ]

            let! charset =
                Gen.elements [ Json.DaemonCharset.Utf8; Json.DaemonCharset.PosixAscii ]

            let! separator = Gen.elements [ "\n"; "\r\n" ]
            return DaemonMessage.ProcessRecords(records, behind), charset, separator
        }

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 500,
        Prop.forAll (Arb.fromGen batch) (fun (message, charset, separator) ->
            let options =
                { SessionOptions.Create shard with
                    Charset = charset
                    LineSeparator = separator
                }

            let _, line = DaemonSession.send message (DaemonSession.create options)

            let expected =
                Array.append (Json.encodeDaemonMessage charset message) (Encoding.ASCII.GetBytes separator)

            Assert.Equal<byte[]>(expected, line))
    )

[<Fact>]
let ``a line encoded ahead, into a reused array, is the line send writes, and tryOpen leaves the session send leaves`` () =
    let batch =
        gen {
            let! records = Gen.arrayOf anyRecord
            let! behind = Gen.elements [ None; Some 0L; Some 12345L ]
            let! charset = Gen.elements [ Json.DaemonCharset.Utf8; Json.DaemonCharset.PosixAscii ]
            let! spare = Gen.choose (0, 4096)
            return DaemonMessage.ProcessRecords(records, behind), charset, spare
        }

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 300,
        Prop.forAll (Arb.fromGen batch) (fun (message, charset, spare) ->
            let options = { SessionOptions.Create shard with Charset = charset }
            let session = DaemonSession.create options
            let sent, line = DaemonSession.send message session
            // A used array, larger than the line and full of other bytes: only the line's own bytes count.
            let reused = Array.create (line.Length + spare) 'x'B
            let encoded = DaemonSession.encodeInto (fun _ -> reused) options message
            Assert.Equal<byte[]>(line, encoded.ToArray())

            Assert.Equal(Ok(), DaemonSession.canOpen message session)

            match DaemonSession.tryOpen message session with
            | Ok opened -> Assert.Equal(sent, opened)
            | Error reason -> failwith reason)
    )

[<Fact>]
let ``a line encoded a slice at a time, whatever the slices, is the line send writes, and whole only at its end`` () =
    // Half the batches with plain partition keys only, which the writer writes by slices; the rest mostly go whole
    // through the reference encoding.
    let plainRecord =
        Gen.map2
            (fun (record: Kcl.Core.Record) key -> { record with PartitionKey = key })
            anyRecord
            (Gen.elements [ "pk"; "pk-1"; ""; "a b~!"; null ])

    let batch =
        gen {
            let! plainKeys = Gen.elements [ true; false ]
            let! records = Gen.arrayOf (if plainKeys then plainRecord else anyRecord)
            let! behind = Gen.elements [ None; Some 0L; Some 12345L ]

            let! charset =
                Gen.elements [ Json.DaemonCharset.Utf8; Json.DaemonCharset.PosixAscii ]

            let! budget = Gen.oneof [ Gen.constant 1; Gen.choose (2, 64); Gen.choose (65, 8192) ]
            return DaemonMessage.ProcessRecords(records, behind), charset, budget, plainKeys
        }

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 300,
        Prop.forAll (Arb.fromGen batch) (fun (message, charset, budget, plainKeys) ->
            let options =
                { SessionOptions.Create shard with
                    Charset = charset
                }

            let _, line = DaemonSession.send message (DaemonSession.create options)
            let given = ref null

            let buffer length =
                given.Value <- Array.create (length + 3) 'x'B
                given.Value

            let writing = DaemonSession.startEncoding buffer options message
            let mutable slices = 1

            while not (writing.Continue budget) do
                Assert.False(writing.Finished)

                Assert.Throws<InvalidOperationException>(fun () -> writing.Line |> ignore)
                |> ignore

                slices <- slices + 1

            let records =
                match message with
                | DaemonMessage.ProcessRecords(records, _) -> records
                | _ -> [||]

            // Each slice writes at least one whole record, and the one with the last record ends the line; the
            // writer's slices of a byte are a record each.
            Assert.InRange(slices, 1, max 1 records.Length)

            if budget = 1 && plainKeys then
                Assert.Equal(max 1 records.Length, slices)

            Assert.True(writing.Finished)
            Assert.True(writing.Continue budget)
            // In the array from `buffer`, whichever way it was written: a driver splices it by reference.
            Assert.Same(given.Value, writing.Array)
            Assert.Same(given.Value, writing.Line.Array)
            Assert.Equal<byte[]>(line, writing.Line.ToArray()))
    )

// ---- a session that keeps only its latest history -----------------------------------------------------------------

type private SessionStep =
    | Send of DaemonMessage
    | Receive of string

// Actions in and out of turn, and child lines of every kind: statuses for any action, checkpoints in and out of
// range, lines that are skipped, and now and then the fatal `null`.
let private anySessionStep =
    let sequences = [ A; B; C ]

    let action =
        Gen.oneof
            [
                Gen.elements sequences |> Gen.map (fun s -> initialize s 0L)
                Gen.listOf (Gen.elements sequences)
                |> Gen.resize 3
                |> Gen.map (List.sort >> List.map (fun s -> s, 0L) >> batch)
                Gen.elements
                    [
                        DaemonMessage.ShardEnded
                        DaemonMessage.LeaseLost
                        DaemonMessage.ShutdownRequested
                        DaemonMessage.Shutdown ShutdownReason.Zombie
                    ]
            ]

    let childLine =
        Gen.frequency
            [
                4,
                Gen.elements [ "initialize"; "processRecords"; "shardEnded"; "leaseLost"; "shutdownRequested" ]
                |> Gen.map status
                4,
                Gen.map2
                    checkpointLine
                    (Gen.optionOf (Gen.elements ("SHARD_END" :: "12" :: sequences)))
                    (Gen.optionOf (Gen.elements [ 0L; 1L ]))
                2, Gen.elements [ ""; " "; "{}" ]
                1, garbage
                1, Gen.constant "null"
            ]

    Gen.frequency [ 1, Gen.map Send action; 2, Gen.map Receive childLine ]

[<Fact>]
let ``a session that keeps only its latest history decides as one that keeps it whole`` () =
    let latestOnly =
        DaemonSession.create
            { SessionOptions.Create shard with
                History = SessionHistory.Latest
                Faults = [ FaultRule.Times(CheckpointError.Throttling, 2, 1) ]
            }

    let wholeHistory =
        DaemonSession.create
            { SessionOptions.Create shard with
                Faults = [ FaultRule.Times(CheckpointError.Throttling, 2, 1) ]
            }

    let newest (history: 'T list) = history |> List.tryLast |> Option.toList

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 500,
        Prop.forAll (Arb.fromGen (Gen.listOf anySessionStep |> Gen.resize 40)) (fun steps ->
            let mutable whole = wholeHistory
            let mutable latest = latestOnly

            for step in steps do
                match step with
                | Send message ->
                    match DaemonSession.trySend message whole, DaemonSession.trySend message latest with
                    | Ok(w, wholeBytes), Ok(l, latestBytes) ->
                        Assert.Equal<byte[]>(wholeBytes, latestBytes)
                        whole <- w
                        latest <- l
                    | Error w, Error l -> Assert.Equal(w, l)
                    | w, l -> failwithf "sending %s: %A with the whole history, %A with the latest" message.Action w l
                | Receive text ->
                    let w, wholeOutcome = DaemonSession.receive text whole
                    let l, latestOutcome = DaemonSession.receive text latest
                    Assert.Equal(wholeOutcome, latestOutcome)
                    whole <- w
                    latest <- l

                Assert.Equal<Finding list>(whole.Findings, latest.Findings)
                Assert.Equal(whole.OpenAction, latest.OpenAction)
                Assert.Equal(whole.Checkpoint, latest.Checkpoint)
                Assert.Equal(whole.LargestPermitted, latest.LargestPermitted)
                Assert.Equal(whole.SequenceNumberAtShardEnd, latest.SequenceNumberAtShardEnd)
                Assert.Equal(whole.RecordsDelivered, latest.RecordsDelivered)
                Assert.Equal(whole.CheckpointRequests, latest.CheckpointRequests)
                Assert.Equal(whole.LeaseLost, latest.LeaseLost)
                Assert.Equal(whole.DaemonExited, latest.DaemonExited)
                Assert.Equal(DaemonSession.nextStep whole, DaemonSession.nextStep latest)
                Assert.Equal<DaemonMessage list>(newest whole.Sent, latest.Sent)
                Assert.Equal<string list>(newest whole.Statuses, latest.Statuses)
                Assert.Equal<CheckpointRecord list>(newest whole.Checkpoints, latest.Checkpoints)
                Assert.Equal<ReceivedLine list>(newest whole.Lines, latest.Lines))
    )
