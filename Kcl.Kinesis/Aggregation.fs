(*
    KPL aggregation (the Kinesis Producer Library's record format): the 4 magic bytes F3 89 9A C2, a protobuf
    AggregatedRecord, and the MD5 of that protobuf. AggregatedRecord: 1 repeated string partition_key_table,
    2 repeated string explicit_hash_key_table, 3 repeated Record records; Record: 1 uint64 partition_key_index,
    2 uint64 explicit_hash_key_index, 3 bytes data, 4 repeated Tag tags. Pure; the encoder exists for tests.
*)
namespace Kcl.Kinesis

open System
open System.IO
open System.Security.Cryptography
open System.Text

[<RequireQualifiedAccess>]
module internal Aggregation =
    let magic = [| 0xF3uy; 0x89uy; 0x9Auy; 0xC2uy |]

    let private writeVarint (out: Stream) (value: uint64) =
        let mutable v = value

        while v >= 0x80UL do
            out.WriteByte(byte (v &&& 0x7FUL) ||| 0x80uy)
            v <- v >>> 7

        out.WriteByte(byte v)

    let private writeBytes (out: Stream) (field: int) (bytes: byte[]) =
        writeVarint out (uint64 ((field <<< 3) ||| 2))
        writeVarint out (uint64 bytes.Length)
        out.Write(bytes, 0, bytes.Length)

    /// Aggregates (partition key, data) pairs into one Kinesis record's data, as the KPL does.
    let encode (records: (string * byte[]) list) : byte[] =
        let keys = records |> List.map fst |> List.distinct
        use body = new MemoryStream()

        for key in keys do
            writeBytes body 1 (Encoding.UTF8.GetBytes key)

        for key, data in records do
            use record = new MemoryStream()
            writeVarint record (uint64 ((1 <<< 3) ||| 0))
            writeVarint record (uint64 (List.findIndex ((=) key) keys))
            writeBytes record 3 data
            writeBytes body 3 (record.ToArray())

        let protobuf = body.ToArray()
        Array.concat [ magic; protobuf; MD5.HashData protobuf ]

    let private readVarint (data: byte[]) (position: int byref) =
        let mutable result = 0UL
        let mutable shift = 0
        let mutable go = true

        while go do
            if position >= data.Length || shift > 63 then
                raise (InvalidDataException "truncated varint")

            let b = data[position]
            position <- position + 1
            result <- result ||| (uint64 (b &&& 0x7Fuy) <<< shift)
            shift <- shift + 7
            go <- b &&& 0x80uy <> 0uy

        result

    /// The fields of a protobuf message: (field number, wire type, varint value or bytes).
    let private fields (data: byte[]) =
        let result = Collections.Generic.List<int * uint64 * byte[]>()
        let mutable position = 0

        while position < data.Length do
            let tag = readVarint data &position
            let field = int (tag >>> 3)

            match int (tag &&& 7UL) with
            | 0 -> result.Add(field, readVarint data &position, null)
            | 2 ->
                let length = int (readVarint data &position)

                if length < 0 || position + length > data.Length then
                    raise (InvalidDataException "truncated field")

                result.Add(field, 0UL, data[position .. position + length - 1])
                position <- position + length
            | 1 -> position <- position + 8
            | 5 -> position <- position + 4
            | other -> raise (InvalidDataException(sprintf "wire type %d" other))

        List.ofSeq result

    /// The sub-records of an aggregated record's data, or None when it is not one (no magic, a bad MD5 or a bad
    /// protobuf): the KCL then delivers the record as it is.
    let tryDecode (data: byte[]) : (string * byte[]) list option =
        if data.Length < magic.Length + 16 || not (data.AsSpan(0, 4).SequenceEqual(ReadOnlySpan magic)) then
            None
        else
            let protobuf = data[4 .. data.Length - 17]
            let digest = data[data.Length - 16 ..]

            if not (MD5.HashData(protobuf).AsSpan().SequenceEqual(ReadOnlySpan digest)) then
                None
            else
                try
                    let top = fields protobuf

                    let keys =
                        top |> List.filter (fun (f, _, _) -> f = 1) |> List.map (fun (_, _, b) -> Encoding.UTF8.GetString b) |> Array.ofList

                    top
                    |> List.filter (fun (f, _, b) -> f = 3 && not (isNull b))
                    |> List.map (fun (_, _, b) ->
                        let inner = fields b

                        let keyIndex =
                            inner |> List.tryPick (fun (f, v, _) -> if f = 1 then Some(int v) else None) |> Option.defaultValue 0

                        let payload =
                            inner |> List.tryPick (fun (f, _, b) -> if f = 3 then Some b else None) |> Option.defaultValue [||]

                        keys[keyIndex], payload)
                    |> Some
                with
                | :? InvalidDataException
                | :? IndexOutOfRangeException -> None
