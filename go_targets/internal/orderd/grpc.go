package orderd

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/faultline/faultline/go_targets/proto/ordersv1"
)

type grpcAPI struct {
	pb.UnimplementedOrderServiceServer
	s *Service
}

func toPB(o *Order) *pb.Order {
	return &pb.Order{Id: o.ID, Sku: o.SKU, Qty: o.Qty, Status: o.Status, CreatedUnixNano: o.CreatedUnixNano}
}

func grpcErr(err error) error {
	switch {
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	default:
		return status.Error(codes.Unavailable, err.Error())
	}
}

func (g *grpcAPI) CreateOrder(ctx context.Context, in *pb.CreateOrderRequest) (*pb.CreateOrderResponse, error) {
	o, err := g.s.CreateOrder(ctx, in.GetSku(), in.GetQty())
	if err != nil {
		return nil, grpcErr(err)
	}
	return &pb.CreateOrderResponse{Order: toPB(o)}, nil
}

func (g *grpcAPI) Reserve(ctx context.Context, in *pb.ReserveRequest) (*pb.ReserveResponse, error) {
	r, err := g.s.Reserve(ctx, in.GetSku(), in.GetQty())
	if err != nil {
		return nil, grpcErr(err)
	}
	return &pb.ReserveResponse{Ok: r.OK, Sku: r.SKU, Remaining: r.Remaining}, nil
}

func (g *grpcAPI) GetOrder(ctx context.Context, in *pb.GetOrderRequest) (*pb.GetOrderResponse, error) {
	o, err := g.s.GetOrder(ctx, in.GetId())
	if err != nil {
		return nil, grpcErr(err)
	}
	return &pb.GetOrderResponse{Order: toPB(o)}, nil
}

func (g *grpcAPI) ListOrders(ctx context.Context, in *pb.ListOrdersRequest) (*pb.ListOrdersResponse, error) {
	os, err := g.s.ListOrders(ctx, int(in.GetLimit()))
	if err != nil {
		return nil, grpcErr(err)
	}
	out := &pb.ListOrdersResponse{Orders: make([]*pb.Order, 0, len(os))}
	for _, o := range os {
		out.Orders = append(out.Orders, toPB(o))
	}
	return out, nil
}

func (g *grpcAPI) Ping(context.Context, *pb.PingRequest) (*pb.PingResponse, error) {
	return &pb.PingResponse{Message: "pong"}, nil
}

// grpcMetrics counts gRPC calls in the same metrics as HTTP, route "grpc:<method>".
func (srv *Server) grpcMetrics(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	route := "grpc:" + info.FullMethod
	srv.m.Duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	srv.m.Requests.WithLabelValues(route, status.Code(err).String()).Inc()
	return resp, err
}
