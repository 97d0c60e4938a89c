package onnxwire

import "google.golang.org/protobuf/encoding/protowire"

// Field numbers of ModelProto.
const (
	ModelIRVersion       protowire.Number = 1
	ModelProducerName    protowire.Number = 2
	ModelProducerVersion protowire.Number = 3
	ModelDomain          protowire.Number = 4
	ModelModelVersion    protowire.Number = 5
	ModelDocString       protowire.Number = 6
	ModelGraph           protowire.Number = 7
	ModelOpsetImport     protowire.Number = 8
	ModelMetadataProps   protowire.Number = 14
	ModelTrainingInfo    protowire.Number = 20
	ModelFunctions       protowire.Number = 25
)

// Field numbers of OperatorSetIdProto.
const (
	OpsetDomain  protowire.Number = 1
	OpsetVersion protowire.Number = 2
)

// Field numbers of GraphProto.
const (
	GraphNode              protowire.Number = 1
	GraphName              protowire.Number = 2
	GraphInitializer       protowire.Number = 5
	GraphDocString         protowire.Number = 10
	GraphInput             protowire.Number = 11
	GraphOutput            protowire.Number = 12
	GraphValueInfo         protowire.Number = 13
	GraphQuantAnnotation   protowire.Number = 14
	GraphSparseInitializer protowire.Number = 15
)

// Field numbers of NodeProto.
const (
	NodeInput     protowire.Number = 1
	NodeOutput    protowire.Number = 2
	NodeName      protowire.Number = 3
	NodeOpType    protowire.Number = 4
	NodeAttribute protowire.Number = 5
	NodeDocString protowire.Number = 6
	NodeDomain    protowire.Number = 7
)

// Field numbers of AttributeProto.
const (
	AttrName          protowire.Number = 1
	AttrF             protowire.Number = 2
	AttrI             protowire.Number = 3
	AttrS             protowire.Number = 4
	AttrT             protowire.Number = 5
	AttrG             protowire.Number = 6
	AttrFloats        protowire.Number = 7
	AttrInts          protowire.Number = 8
	AttrStrings       protowire.Number = 9
	AttrTensors       protowire.Number = 10
	AttrGraphs        protowire.Number = 11
	AttrDocString     protowire.Number = 13
	AttrTP            protowire.Number = 14
	AttrTypeProtos    protowire.Number = 15
	AttrType          protowire.Number = 20
	AttrRefAttrName   protowire.Number = 21
	AttrSparseTensor  protowire.Number = 22
	AttrSparseTensors protowire.Number = 23
)

// AttributeProto.AttributeType values.
const (
	AttrTypeUndefined = 0
	AttrTypeFloat     = 1
	AttrTypeInt       = 2
	AttrTypeString    = 3
	AttrTypeTensor    = 4
	AttrTypeGraph     = 5
	AttrTypeFloats    = 6
	AttrTypeInts      = 7
	AttrTypeStrings   = 8
	AttrTypeTensors   = 9
	AttrTypeGraphs    = 10
)

// Field numbers of TensorProto.
const (
	TensorDims         protowire.Number = 1
	TensorDataType     protowire.Number = 2
	TensorSegment      protowire.Number = 3
	TensorFloatData    protowire.Number = 4
	TensorInt32Data    protowire.Number = 5
	TensorStringData   protowire.Number = 6
	TensorInt64Data    protowire.Number = 7
	TensorName         protowire.Number = 8
	TensorRawData      protowire.Number = 9
	TensorDoubleData   protowire.Number = 10
	TensorUint64Data   protowire.Number = 11
	TensorDocString    protowire.Number = 12
	TensorExternalData protowire.Number = 13
	TensorDataLocation protowire.Number = 14
)

// TensorProto.DataLocation values.
const (
	DataLocationDefault  = 0
	DataLocationExternal = 1
)

// Field numbers of SparseTensorProto.
const (
	SparseValues  protowire.Number = 1
	SparseIndices protowire.Number = 2
	SparseDims    protowire.Number = 3
)

// Field numbers of StringStringEntryProto.
const (
	EntryKey   protowire.Number = 1
	EntryValue protowire.Number = 2
)

// Field numbers of ValueInfoProto.
const (
	ValueInfoName      protowire.Number = 1
	ValueInfoType      protowire.Number = 2
	ValueInfoDocString protowire.Number = 3
)

// Field numbers of TypeProto, TypeProto.Tensor, TensorShapeProto and
// TensorShapeProto.Dimension.
const (
	TypeTensorType       protowire.Number = 1
	TypeTensorElem       protowire.Number = 1
	TypeTensorShape      protowire.Number = 2
	ShapeDim             protowire.Number = 1
	DimValue             protowire.Number = 1
	DimParam             protowire.Number = 2
	TypeSequenceType     protowire.Number = 4
	TypeMapType          protowire.Number = 5
	TypeDenotation       protowire.Number = 6
	TypeOptionalType     protowire.Number = 9
	TypeSparseTensorType protowire.Number = 8
)
